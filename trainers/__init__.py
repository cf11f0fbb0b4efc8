"""mutransfer trainers: BP, PC and TP under SP and μP, in plain PyTorch.

No Ray, Optuna or MLflow here: a trainer runs in a Python loop, a notebook or a Ray worker alike.
"""

from . import _bp, _pc, _tp  # noqa: F401  (register the trainers and their tables)
from ._base import TRAINERS, Trainer, make_trainer, register_trainer
from ._batched import batchable, train_batched
from ._config import CHOICES, TrainerConfig
from ._coord import DEFAULT_WIDTHS, CoordCheck, coord_check, fit_slopes
from ._data import (
    DATASET_REGISTRY,
    DATASETS,
    FMNIST_DATASETS,
    DataError,
    Dataset,
    DatasetEntry,
    dataset_entry,
    download_fashion_mnist,
    ensure_fashion_mnist,
    find_fashion_mnist,
    load_dataset,
    load_fashion_mnist,
    make_teacher_student,
    read_idx,
    register_dataset,
)
from ._fit import loglog_slope
from ._layers import Conv, Dense
from ._loop import train
from ._model import ACTIVATIONS, CNN, MLP, MODELS, Net, init_mlp, init_net, make_model
from ._param import LayerRule, Table, layer_roles, register_table, resolve_table
from ._pc import _tanh_pair as tanh_pair  # tanh and its derivative in one pass (benchmarks)

__all__ = [
    "ACTIVATIONS",
    "CHOICES",
    "DATASETS",
    "FMNIST_DATASETS",
    "CNN",
    "Conv",
    "CoordCheck",
    "DEFAULT_WIDTHS",
    "DataError",
    "Dataset",
    "Dense",
    "LayerRule",
    "MLP",
    "MODELS",
    "Net",
    "TRAINERS",
    "Table",
    "Trainer",
    "TrainerConfig",
    "coord_check",
    "download_fashion_mnist",
    "ensure_fashion_mnist",
    "find_fashion_mnist",
    "fit_slopes",
    "loglog_slope",
    "init_mlp",
    "init_net",
    "layer_roles",
    "load_dataset",
    "load_fashion_mnist",
    "make_model",
    "make_teacher_student",
    "make_trainer",
    "read_idx",
    "register_table",
    "register_trainer",
    "register_dataset",
    "DATASET_REGISTRY",
    "DatasetEntry",
    "dataset_entry",
    "resolve_table",
    "tanh_pair",
    "train",
    "train_batched",
    "batchable",
]

from ._pc import PC_TABLES, PCTrainer  # noqa: E402
from ._pc_interp_trained import pc_interpolation_pc_trained  # noqa: E402  (PC vs BP after PC training)
from ._pc_theory import (  # noqa: E402
    activity_gauss_newton_direction,
    direction_cosines,
    gauss_newton_direction,
    linear_pc_coupling,
    linear_pc_direction,
    linear_pc_fixed_point,
    output_jacobians,
)

__all__ += [
    "pc_interpolation_pc_trained",
    "PC_TABLES",
    "PCTrainer",
    "activity_gauss_newton_direction",
    "direction_cosines",
    "gauss_newton_direction",
    "linear_pc_coupling",
    "linear_pc_direction",
    "linear_pc_fixed_point",
    "output_jacobians",
]

from ._alignment import NTK_TABLE, Alignment, alignment_exponent, alignment_profile, omega_intervals  # noqa: E402
from ._tp import TP_TABLES, TPTrainer  # noqa: E402
from ._tp_feedback import FEEDBACK_KINDS  # noqa: E402

__all__ += [
    "NTK_TABLE",
    "alignment_profile",
    "omega_intervals",
    "Alignment",
    "FEEDBACK_KINDS",
    "TPTrainer",
    "TP_TABLES",
    "alignment_exponent",
]

from ._geometry import check_steps, pc_geometry  # noqa: E402
from ._pc_interp import pc_interpolation  # noqa: E402
from ._products import forced as forced_matmul  # noqa: E402

__all__ += ["check_steps", "forced_matmul", "pc_geometry", "pc_interpolation"]

from . import _derive_rules  # noqa: E402,F401  (the built-in algorithms' desiderata)
from ._derive import DESIDERATA, Derivation, Desiderata, derive, measure, register_desiderata, using_table  # noqa: E402
from ._table_file import (  # noqa: E402
    TableFileError,
    load_table_file,
    parse_table,
    table_key,
    table_to_dict,
    write_table_file,
)

__all__ += [
    "DESIDERATA",
    "Derivation",
    "Desiderata",
    "TableFileError",
    "derive",
    "load_table_file",
    "measure",
    "parse_table",
    "register_desiderata",
    "table_key",
    "table_to_dict",
    "using_table",
    "write_table_file",
]
