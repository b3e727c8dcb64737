"""Numbers about explanations: faithfulness measures on plain arrays (`faithfulness`), the comparison
of several models' maps (`comparison`, its tables in `results`), the sanity checks (`sanity`),
invariance to transformations (`invariance`) and Zeiler & Fergus' correspondence (`correspondence`).

Names are resolved on first use; ``invariance`` and ``correspondence`` are the functions."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "comparison": ["compare"],
        "results": ["Comparison", "merge_shards"],
        "sanity": ["input_invariance", "model_randomization", "sanity_checks"],
        "invariance": ["invariance"],
        "correspondence": ["correspondence"],
        "faithfulness": [
            "curve_area",
            "deletion_curve",
            "energy_in_mask",
            "insertion_curve",
            "pointing_game",
            "rank_correlation",
            "shuffle_sensitivity",
        ],
    },
)
