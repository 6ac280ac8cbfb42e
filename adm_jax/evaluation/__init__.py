"""Sample-quality evaluation: FID, sFID, IS, precision/recall, with named feature networks."""
from adm_jax.evaluation.api import (  # noqa: F401
    FEATURE_NETS, classifier_accuracy, evaluate_npz, extract_features, format_result,
    load_batch, save_reference_stats, source_tag, write_reference_batch)
from adm_jax.evaluation.metrics import (  # noqa: F401
    compute_statistics, fid_from_features, frechet_distance, inception_score, manifold_radii,
    precision_recall, spatial_features)
