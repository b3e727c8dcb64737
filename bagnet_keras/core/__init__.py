"""What every part of the library shares: walking a Keras graph layer by layer (`graph`, the one home of
private Keras internals), receptive-field geometry (`geometry`), argument checks (`validation`, `inputs`),
the image reader (`files`), the commit protocol every writer uses (`commit`), streamed passes (`stream`)
and the custom layers (`layers`).

``Geometry`` and ``receptive_field`` (where a map sits on its input) are exported here, resolved on
first use so that the light modules (`validation`) import no Keras."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "geometry": ["Geometry", "receptive_field"],
        "validation": ["check_int", "check_number", "check_positive_int"],
    },
)
