"""What a person looks at: matplotlib figures (`plot`), the self-contained HTML report (`html`) and the
feature atlas page (`atlas_page`). Names are resolved on first use."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "html": ["write_report"],
        "atlas_page": ["write_atlas"],
        "plot": ["plot_evidence", "plot_grid", "plot_heatmap", "plot_overlay", "plot_patches"],
    },
)
