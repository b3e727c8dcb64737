"""The explanations of one image at a time: BagNet evidence maps and top patches (`evidence`), the
Grad-CAM family (`cam`), guided backprop and deconvnet (`guided`) and occlusion (`occlusion`).

The functions are imported from `bagnet_keras` itself (``bagnet_keras.cam`` is the function; this
package's ``cam`` is its module)."""
