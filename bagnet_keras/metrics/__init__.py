"""Numbers about explanations: faithfulness measures on plain arrays (`faithfulness`) and the
comparison of several models' maps (`comparison`)."""
