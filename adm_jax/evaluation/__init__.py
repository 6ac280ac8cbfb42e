"""Sample-quality evaluation: FID, sFID, IS, precision/recall, with named feature networks."""

from adm_jax.evaluation.api import FEATURE_NETS  # noqa: F401
from adm_jax.evaluation.api import classifier_accuracy  # noqa: F401
from adm_jax.evaluation.api import evaluate_npz  # noqa: F401
from adm_jax.evaluation.api import extract_features  # noqa: F401
from adm_jax.evaluation.api import format_result  # noqa: F401
from adm_jax.evaluation.api import load_batch  # noqa: F401
from adm_jax.evaluation.api import save_reference_stats  # noqa: F401
from adm_jax.evaluation.api import source_tag  # noqa: F401
from adm_jax.evaluation.api import write_reference_batch  # noqa: F401
from adm_jax.evaluation.metrics import compute_statistics  # noqa: F401
from adm_jax.evaluation.metrics import fid_from_features  # noqa: F401
from adm_jax.evaluation.metrics import frechet_distance  # noqa: F401
from adm_jax.evaluation.metrics import inception_score  # noqa: F401
from adm_jax.evaluation.metrics import manifold_radii  # noqa: F401
from adm_jax.evaluation.metrics import precision_recall  # noqa: F401
from adm_jax.evaluation.metrics import spatial_features  # noqa: F401
