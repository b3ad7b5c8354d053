"""The contextual retrieval task of Compositional Attention (Mittal et al., ICLR 2022,
arXiv 2110.09419), generated as the official ``Contextual_Retrieval_Task/data.py`` of
github sarthmit/Compositional-Attention defines it.

An example is a set of ``L`` tokens (``seq_len``; the paper: 10). Token ``i`` carries

- ``v_s`` search features ``x[i, 0:v_s]`` and ``v_p`` retrieval features ``x[i, v_s:v_s+v_p]``,
  all standard normal;
- for each search ``s`` a one-hot choice ``r[i, s]`` of one retrieval feature, flattened
  search-major into ``v_s * v_p`` more input features (index ``s * v_p + r``).

Search ``s`` of token ``i`` selects the nearest *other* token on search feature ``s``,
``j(i, s) = argmin_{j != i} |x[j, s] - x[i, s]|``; the target of token ``i`` reads the chosen
retrieval feature of each selected token and adds them up::

    target[i] = sum_s c_s * x[j(i, s), v_s + r[i, s]]

with ``c_s`` the fixed coefficients :data:`COEFFICIENTS` (``coeffs`` in data.py, drawn once from
U(-1, 1) by the authors; ``c_s = coeffs[s]``) or ``c_s = 1`` (the official ``--no-coeff``).
Ties (probability zero with continuous features) go to the lowest token index, as ``np.argmin``.

In-distribution data (data.py ``dataset``) draws every choice ``r[i, s]`` uniformly and
independently. Out-of-distribution data (data.py ``dataset_ood``, ``main.py --ood``) splits the
``C = v_p ** v_s`` *combinations* ``(r[i, 0], ..., r[i, v_s - 1])`` (ordered as
``itertools.product(range(v_p), repeat=v_s)``) into training and held-out combinations; each
token draws one whole combination uniformly from its split, so every single (search -> retrieval)
pairing is seen in training and only some joint choices are new at test time. What dataset_ood
does, precisely:

- combinations at even positions of the product order go to training, those at odd positions to
  the held-out set;
- while training has fewer than ``int(0.8 * C)`` combinations, the first odd-position combinations
  move to training, so training keeps ``int(0.8 * C)`` combinations and the held-out set the last
  ``C - int(0.8 * C)`` odd-position ones (``v_s = v_p = 2``: training ``(0,0), (1,0), (0,1)``,
  held out ``(1,1)``; ``v_s = 2, v_p = 4``: 12 / 4);
- oddity: when nothing has to move (``C <= 3``, e.g. ``v_s = 1, v_p <= 3``) the two lists are
  never turned into arrays and the next statement (``.shape``) raises, so the official OoD setting
  cannot run there; :func:`split_task_combinations` continues the same rule (``C = 2``: ``(0,)`` /
  ``(1,)``; ``C = 3``: ``(0,), (2,)`` / ``(1,)``) and refuses ``C = 1`` (nothing to hold out);
- the split is deterministic (no randomness), recomputed on every call, and both splits are
  sampled on every call although one is used;
- main.py evaluates (``eval_step``) only on held-out combinations in the OoD setting, and reports
  the loss of the last iterate (no model selection).

:func:`split_task_combinations` implements that rule (``rule="interleaved"``, the default: the
paper's 80/20 split of combinations as the official code realizes it) and a seeded uniformly random
choice of ``C - int(0.8 * C)`` held-out combinations (``rule="random"``).

The official ground truth of the searches is ``[N, L, L]`` with ones at the tokens that any search
of token ``i`` selects (the union over searches). Here ``"searches"`` keeps which search selected
which token: ``[N, L, v_s]`` token indices.

Sizes: the official training draws a fresh batch of 256 examples at every one of its 100,000
iterations and evaluates on 100 fresh batches of 256 every 5,000 iterations (main.py, defaults
``--batch-size 256 --iterations 100000``; ``--v-s 2 --v-p 2 --seq-len 10``). Here an epoch is
``train_size`` (default 5,000 batches of 256) examples, drawn anew every epoch (20 epochs = the
official 100,000 iterations), and validation/test are fixed sets of 100 batches of 256.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import torch
from torch import Tensor

from tenfold.datamodules.attention.generated import (
    GeneratedBatches,
    GeneratedTaskDataModule,
    check_loader_args,
    check_positive_int,
)

__all__ = [
    "COEFFICIENTS",
    "OOD_SPLIT_RULES",
    "ContextualRetrievalDataModule",
    "generate_contextual_retrieval",
    "nearest_other_tokens",
    "split_task_combinations",
    "task_combinations",
]

COEFFICIENTS: tuple[float, ...] = (
    -0.71347752, -0.6062312, 0.66062073, -0.61213017, -0.82631877,
    0.75908621, -0.36274866, 0.84383333, -0.37908235, 0.46539368,
    0.98675292, 0.20388434, -0.78718797, -0.74316581, 0.11539548,
    0.35559215, 0.32584524, 0.58590426, 0.95284985, -0.77999937,
    -0.660806, -0.35542737, 0.93532822, 0.75049373, -0.27825577,
)  # fmt: skip
"""The fixed coefficients ``c_s`` of the searches (``coeffs`` of the official
``Contextual_Retrieval_Task/data.py``, drawn once from U(-1, 1)); search ``s`` uses
``COEFFICIENTS[s]``, so the coefficient variant supports at most 25 searches."""

OOD_SPLIT_RULES = ("interleaved", "random")
"""Rules of :func:`split_task_combinations`."""

_TRAIN_COMBINATION_FRACTION = 0.8
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def task_combinations(num_searches: int, num_retrievals: int) -> np.ndarray:
    """All ``C = num_retrievals ** num_searches`` joint retrieval choices, int64 ``[C, v_s]``.

    Row ``k`` gives, for each search ``s``, the retrieval feature it reads; rows are in the order of
    ``itertools.product(range(v_p), repeat=v_s)`` (the official ``all_v_combs``).
    """
    rows = list(itertools.product(range(num_retrievals), repeat=num_searches))
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), num_searches)


def split_task_combinations(
    num_searches: int, num_retrievals: int, rule: str = "interleaved", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out joint retrieval choices of the OoD setting, each int64 ``[C_k, v_s]``.

    Training gets ``int(0.8 * C)`` of the ``C`` combinations of :func:`task_combinations`, the
    held-out set the others (disjoint, together all ``C``).

    Args:
        num_searches: ``v_s``.
        num_retrievals: ``v_p``.
        rule: ``"interleaved"``: the official rule (module docstring): even positions of the
            product order, then the first odd positions, go to training; ``"random"``: a uniformly
            random held-out set drawn with ``numpy.random.default_rng(seed)``, both parts kept in
            product order.
        seed: seed of ``rule="random"`` (unused by ``"interleaved"``).

    Raises:
        ValueError: for an unknown rule, or fewer than 2 combinations (nothing to hold out).
    """
    if rule not in OOD_SPLIT_RULES:
        raise ValueError(f"ood_split must be one of {OOD_SPLIT_RULES}, got {rule!r}")
    combinations = task_combinations(num_searches, num_retrievals)
    count = len(combinations)
    if count < 2:
        raise ValueError(
            f"the OoD split needs at least 2 retrieval combinations, but v_p ** v_s = {count}: "
            "use num_gt_retrievals >= 2"
        )
    num_train = max(1, int(_TRAIN_COMBINATION_FRACTION * count))
    if rule == "interleaved":
        even, odd = list(range(0, count, 2)), list(range(1, count, 2))
        moved = max(0, num_train - len(even))
        train_positions, test_positions = even + odd[:moved], odd[moved:]
    else:
        order = np.random.default_rng(seed).permutation(count)
        train_positions, test_positions = sorted(order[:num_train]), sorted(order[num_train:])
    return combinations[train_positions], combinations[test_positions]


def nearest_other_tokens(search_features: np.ndarray) -> np.ndarray:
    """For each token and search feature, the nearest other token on that feature.

    Args:
        search_features: ``[N, L, v_s]``.

    Returns:
        int64 ``[N, L, v_s]``: entry ``[n, i, s]`` is ``argmin_{j != i} |x[n, j, s] - x[n, i, s]|``
        (lowest index on ties).
    """
    length = search_features.shape[1]
    if length < 2:
        raise ValueError(f"a search needs another token: seq_len must be >= 2, got {length}")
    distances = np.abs(search_features[:, :, None, :] - search_features[:, None, :, :])
    distances[:, np.arange(length), np.arange(length), :] = np.inf
    return distances.argmin(axis=2)


def generate_contextual_retrieval(
    rng: np.random.Generator,
    num_examples: int,
    seq_len: int = 10,
    num_searches: int = 2,
    num_retrievals: int = 2,
    use_coefficients: bool = True,
    combinations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Draws ``num_examples`` examples of the contextual retrieval task (module docstring).

    Args:
        rng: the only source of randomness.
        num_examples: ``N``.
        seq_len: tokens per example ``L``.
        num_searches: ground-truth searches ``v_s``.
        num_retrievals: ground-truth retrieval features ``v_p``.
        use_coefficients: weight search ``s`` by ``COEFFICIENTS[s]`` (else all weights 1).
        combinations: int ``[C, v_s]`` joint retrieval choices a token may draw (uniformly, one row
            per token: the OoD setting); None draws every choice independently.

    Returns:
        ``"inputs"``: float32 ``[N, L, v_s + v_p + v_s * v_p]`` (search features, retrieval
        features, one-hot retrieval choices); ``"target"``: float32 ``[N, L]``; ``"searches"``:
        int64 ``[N, L, v_s]``, the token each search selects; ``"retrievals"``: int64
        ``[N, L, v_s]``, the retrieval feature each search reads. The target is computed in float64
        from the float32 features and then rounded to float32.
    """
    if use_coefficients and num_searches > len(COEFFICIENTS):
        raise ValueError(
            f"the coefficient variant has {len(COEFFICIENTS)} coefficients but num_gt_searches="
            f"{num_searches}: use at most {len(COEFFICIENTS)} searches or use_coefficients=false"
        )
    features = rng.standard_normal((num_examples, seq_len, num_searches + num_retrievals))
    features = features.astype(np.float32)
    if combinations is None:
        retrievals = rng.integers(num_retrievals, size=(num_examples, seq_len, num_searches))
    else:
        retrievals = combinations[rng.integers(len(combinations), size=(num_examples, seq_len))]
    exact = features.astype(np.float64)
    searches = nearest_other_tokens(exact[..., :num_searches])
    example = np.arange(num_examples)[:, None, None]
    retrieved = exact[example, searches, num_searches + retrievals]
    weights = np.asarray(COEFFICIENTS[:num_searches]) if use_coefficients else np.ones(num_searches)
    target = (retrieved * weights).sum(axis=-1)
    choices = np.eye(num_retrievals, dtype=np.float32)[retrievals]
    inputs = np.concatenate(
        [features, choices.reshape(num_examples, seq_len, num_searches * num_retrievals)], axis=-1
    )
    return {
        "inputs": inputs,
        "target": target.astype(np.float32),
        "searches": searches.astype(np.int64),
        "retrievals": retrievals.astype(np.int64),
    }


def _contextual_retrieval_batch(
    rng: np.random.Generator, size: int, **task: object
) -> dict[str, Tensor]:
    """One batch of :func:`generate_contextual_retrieval` as tensors."""
    arrays = generate_contextual_retrieval(rng, size, **task)  # type: ignore[arg-type]
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


class ContextualRetrievalDataModule(GeneratedTaskDataModule):
    """Batches of the contextual retrieval task (module docstring), generated on the fly.

    Batches (dicts; ``B`` examples, ``L = seq_len``, ``v_s = num_gt_searches``,
    ``v_p = num_gt_retrievals``):

    - ``"inputs"``: float32 ``[B, L, input_dim]``, ``input_dim = v_s + v_p + v_s * v_p``.
    - ``"target"``: float32 ``[B, L]`` (the official loss: L1).
    - ``"searches"``: int64 ``[B, L, v_s]``, the token that search ``s`` of token ``i`` selects
      (never ``i``), to probe attention maps.
    - ``"retrievals"``: int64 ``[B, L, v_s]``, the retrieval feature search ``s`` of token ``i``
      reads (the argmax of the one-hot part of ``"inputs"``).

    Training data are drawn anew every epoch (:class:`~tenfold.datamodules.attention.generated.EpochBatchSampler`), as the official code
    draws a fresh batch every iteration; validation and test are fixed sets. Batch ``k`` of a split
    comes from ``numpy.random.default_rng([seed, split code, epoch, k])``, so data do not depend
    on workers, devices or the order of reading. With ``ood=True`` training and validation tokens
    draw their joint retrieval choice from the training combinations and test tokens from the
    held-out ones; ``train_combinations`` / ``test_combinations`` hold them. The official code has
    no validation (it evaluates the last iterate on the held-out combinations); here the tested
    checkpoint is selected by validation, which must not see the held-out combinations, or the
    test figure would be selected on the distribution it measures.

    Attributes (after construction): ``input_dim``, ``num_gt_searches``, ``num_gt_retrievals``,
    ``seq_len``, ``coefficients`` (float64 ``[v_s]``, ones without coefficients),
    ``train_combinations`` / ``test_combinations`` (int64 ``[C_k, v_s]``, None unless ``ood``).

    Args:
        seq_len: tokens per example (paper: 10).
        num_gt_searches: ground-truth searches ``v_s`` (official default 2).
        num_gt_retrievals: ground-truth retrieval features ``v_p`` (official default 2).
        use_coefficients: the coefficient variant (official default; ``--no-coeff``: false).
        ood: hold out joint retrieval choices (official ``--ood``).
        ood_split: ``"interleaved"`` (official rule) or ``"random"`` (seeded by ``seed``); see
            :func:`split_task_combinations`.
        train_size: training examples per epoch (default 5,000 official iterations of 256).
        val_size, test_size: examples of the fixed validation and test sets (official evaluation:
            100 batches of 256).
        batch_size: examples per batch (official: 256).
        num_workers: DataLoader worker processes.
        seed: seed of all data (and of ``ood_split="random"``).
        input_dim: the input dimension as the config declares it (models interpolate
            ``${data.input_dim}``); checked against ``v_s + v_p + v_s * v_p``. None: not checked.
    """

    def __init__(
        self,
        seq_len: int = 10,
        num_gt_searches: int = 2,
        num_gt_retrievals: int = 2,
        use_coefficients: bool = True,
        ood: bool = False,
        ood_split: str = "interleaved",
        train_size: int = 1_280_000,
        val_size: int = 25_600,
        test_size: int = 25_600,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        input_dim: int | None = None,
    ) -> None:
        super().__init__()
        owner = "ContextualRetrievalDataModule"
        for name, value in (
            ("num_gt_searches", num_gt_searches),
            ("num_gt_retrievals", num_gt_retrievals),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            check_positive_int(owner, name, value)
        check_positive_int(owner, "seq_len", seq_len)
        if seq_len < 2:
            raise ValueError(f"{owner}: seq_len must be >= 2 (a search selects another token)")
        check_loader_args(owner, batch_size, num_workers, seed)
        if ood_split not in OOD_SPLIT_RULES:  # also without ood, where a typo would pass until it is switched on
            raise ValueError(f"{owner}: ood_split must be one of {OOD_SPLIT_RULES}, got {ood_split!r}")
        if use_coefficients and num_gt_searches > len(COEFFICIENTS):
            raise ValueError(
                f"{owner}: the coefficient variant has {len(COEFFICIENTS)} coefficients: set "
                f"num_gt_searches <= {len(COEFFICIENTS)} or use_coefficients=false"
            )
        self.save_hyperparameters()
        self.seq_len = seq_len
        self.num_gt_searches = num_gt_searches
        self.num_gt_retrievals = num_gt_retrievals
        self.use_coefficients = use_coefficients
        self.ood = ood
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.input_dim = num_gt_searches + num_gt_retrievals + num_gt_searches * num_gt_retrievals
        if input_dim is not None and input_dim != self.input_dim:
            raise ValueError(
                f"{owner}: data.input_dim={input_dim} but v_s={num_gt_searches}, "
                f"v_p={num_gt_retrievals} give v_s + v_p + v_s * v_p = {self.input_dim}: "
                f"set data.input_dim={self.input_dim}"
            )
        self.coefficients = (
            np.asarray(COEFFICIENTS[:num_gt_searches])
            if use_coefficients
            else np.ones(num_gt_searches)
        )
        self.train_combinations: np.ndarray | None = None
        self.test_combinations: np.ndarray | None = None
        if ood:
            self.train_combinations, self.test_combinations = split_task_combinations(
                num_gt_searches, num_gt_retrievals, rule=ood_split, seed=seed
            )
        self.datasets: dict[str, GeneratedBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        """Builds the three generated splits (cheap: nothing is drawn until a batch is read)."""
        if self.datasets:
            return
        for split, size in self.sizes.items():
            # model selection (validation) sees the training combinations only
            combinations = self.test_combinations if split == "test" else self.train_combinations
            make_batch = partial(
                _contextual_retrieval_batch,
                seq_len=self.seq_len,
                num_searches=self.num_gt_searches,
                num_retrievals=self.num_gt_retrievals,
                use_coefficients=self.use_coefficients,
                combinations=combinations,
            )
            self.datasets[split] = GeneratedBatches(
                make_batch, size, self.batch_size, (self.seed, _SPLIT_CODES[split])
            )
