"""What every part of the library shares: walking a Keras graph layer by layer (`graph`, the one home of
private Keras internals), receptive-field geometry (`geometry`), argument checks (`inputs`), the image
reader (`files`), the commit protocol every writer uses (`commit`) and the custom layers (`layers`)."""
