"""SCAN: the grammar and interpretation against numbers and fingerprints of the released files,
hand-computed interpretations, exact split definitions, the file reader, the vocabulary and the
batches of ``SCANDataModule``."""

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tenfold.datamodules.attention import (
    SCANDataModule,
    SCANVocabulary,
    generate_scan_pairs,
    interpret_scan_command,
    read_scan_file,
    read_scan_split,
    scan_split,
)
from tenfold.datamodules.attention.scan import ACTIONS, COMMAND_WORDS, generate_scan_commands

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "attention"

# Line counts of the released files (github brendenlake/SCAN, commit of the stored snapshot).
RELEASED_COUNTS = {
    "simple": (16728, 4182),
    "length": (16990, 3920),
    "addprim_jump": (14670, 7706),
    "addprim_turn_left": (21890, 1208),
}
# sha256 of the released files' lines ("IN: <command> OUT: <actions>"), sorted, joined by "\n".
TASKS_TXT_SHA256 = "345bff3c25864652f326ba1960aa515d156b63f45067ea57268f71d7362a2440"
RELEASED_SHA256 = {
    "length": (
        "114e6bdb1575f27d8d6d4449081970cef4846b2ec89b260dc2a0e5297c3e75d5",
        "45bb5e5f0e0678da016725d880ba4349267b93262762a2c66f9b51b04535a2ce",
    ),
    "addprim_jump": (
        "1e5ab3357dc958267480a6012d3970953f35bb098a115b1754a1ad36d371b7cb",
        "48956239771e67ded4d090164919ab79d21756218a3e94f9abc2cbe346c0cd1c",
    ),
    "addprim_turn_left": (
        "4f1ccb48ec39aed79ac69c8da9d2c8061b1bb8ea8199ab8931b6939068a3b626",
        "81acae1af5137165debf8630986733b2581aea19cb98e32f4026bccce8042b09",
    ),
}


def fingerprint(pairs):
    lines = sorted(f"IN: {command} OUT: {actions}" for command, actions in pairs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write_scan_file(path: Path, pairs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"IN: {command} OUT: {actions}\n" for command, actions in pairs))


@pytest.fixture(scope="module")
def all_pairs():
    return generate_scan_pairs()


@pytest.fixture(scope="module")
def length_datamodule():
    dm = SCANDataModule(split="length", batch_size=32, eval_batch_size=512, seed=0)
    dm.setup("fit")
    return dm


# --- grammar and interpretation -------------------------------------------------------------


def test_generated_dataset_equals_released_tasks_txt(all_pairs):
    commands = [command for command, _ in all_pairs]
    assert len(commands) == 20910 and len(set(commands)) == 20910
    assert commands == generate_scan_commands()
    assert fingerprint(all_pairs) == TASKS_TXT_SHA256


@pytest.mark.parametrize(
    "command, actions",
    [
        ("run", "I_RUN"),
        ("turn left twice", "I_TURN_LEFT I_TURN_LEFT"),
        ("jump twice after walk left", "I_TURN_LEFT I_WALK I_JUMP I_JUMP"),
        ("turn opposite right thrice", " ".join(["I_TURN_RIGHT"] * 6)),
        ("turn around left", " ".join(["I_TURN_LEFT"] * 4)),
        ("jump around right", " ".join(["I_TURN_RIGHT I_JUMP"] * 4)),
        ("look right twice and run", "I_TURN_RIGHT I_LOOK I_TURN_RIGHT I_LOOK I_RUN"),
        (
            "jump opposite left and walk thrice",
            "I_TURN_LEFT I_TURN_LEFT I_JUMP I_WALK I_WALK I_WALK",
        ),
        (
            "jump opposite left after walk around left",
            " ".join(["I_TURN_LEFT I_WALK"] * 4) + " I_TURN_LEFT I_TURN_LEFT I_JUMP",
        ),
        (
            "walk around left thrice and run around right thrice",
            " ".join(["I_TURN_LEFT I_WALK"] * 12 + ["I_TURN_RIGHT I_RUN"] * 12),
        ),
    ],
)
def test_interpretation_by_hand(command, actions, all_pairs):
    assert " ".join(interpret_scan_command(command)) == actions
    assert (command, actions) in set(all_pairs)


@pytest.mark.parametrize(
    "command",
    [
        "",
        "turn",
        "fly",
        "jump and",
        "walk twice twice",
        "walk right left",
        "walk opposite",
        "walk left and run and look",
        "turn twice",
        "around left",
    ],
)
def test_interpretation_rejects_non_commands(command):
    with pytest.raises(ValueError, match="not a SCAN command"):
        interpret_scan_command(command)


def test_longest_command_and_action_sequence(all_pairs):
    assert max(len(command.split()) for command, _ in all_pairs) == 9
    assert max(len(actions.split()) for _, actions in all_pairs) == 48


# --- splits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", list(RELEASED_COUNTS))
def test_split_sizes_match_released_files(split):
    train, test = scan_split(split)
    assert (len(train), len(test)) == RELEASED_COUNTS[split]


@pytest.mark.parametrize("split", list(RELEASED_SHA256))
def test_deterministic_splits_equal_released_files(split):
    train, test = scan_split(split)
    assert (fingerprint(train), fingerprint(test)) == RELEASED_SHA256[split]


def test_length_split_definition(all_pairs):
    train, test = scan_split("length")
    train_lengths = [len(actions.split()) for _, actions in train]
    test_lengths = [len(actions.split()) for _, actions in test]
    assert max(train_lengths) == 22 and min(test_lengths) == 24  # no command has 23 actions
    assert not {command for command, _ in train} & {command for command, _ in test}
    assert set(train) | set(test) == set(all_pairs)


@pytest.mark.parametrize("cutoff, sizes", [(24, (17326, 3584)), (30, (19758, 1152))])
def test_length_split_other_cutoffs(cutoff, sizes):
    train, test = scan_split("length", length_cutoff=cutoff)
    assert (len(train), len(test)) == sizes
    assert max(len(a.split()) for _, a in train) <= cutoff < min(len(a.split()) for _, a in test)


@pytest.mark.parametrize(
    "split, primitive, actions, copies",
    [
        ("addprim_jump", "jump", "I_JUMP", 1467),
        ("addprim_turn_left", "turn left", "I_TURN_LEFT", 2189),
    ],
)
def test_add_primitive_split_definition(split, primitive, actions, copies, all_pairs):
    train, test = scan_split(split)
    counts = Counter(train)
    assert counts[(primitive, actions)] == copies
    assert copies == round(0.1 * len(train))
    assert all(count == 1 for pair, count in counts.items() if pair[0] != primitive)
    others = [command for command, _ in train if command != primitive]
    assert not any(f" {primitive} " in f" {command} " for command in others)
    assert all(f" {primitive} " in f" {command} " and command != primitive for command, _ in test)
    assert set(train) | set(test) == set(all_pairs) and not set(train) & set(test)


def test_turn_left_split_keeps_turn_opposite_and_around_left_in_train():
    train_commands = {command for command, _ in scan_split("addprim_turn_left")[0]}
    assert {"turn opposite left", "turn around left twice", "jump left"} <= train_commands
    assert "turn left twice" not in train_commands


def test_simple_split_is_a_seeded_partition(all_pairs):
    train, test = scan_split("simple", seed=3)
    assert (len(train), len(test)) == (16728, 4182)
    assert sorted(train + test) == sorted(all_pairs)
    assert scan_split("simple", seed=3) == (train, test)
    assert set(scan_split("simple", seed=4)[1]) != set(test)


def test_unknown_split_and_bad_cutoff():
    with pytest.raises(ValueError, match="unknown SCAN split 'jump'.*addprim_jump"):
        scan_split("jump")
    with pytest.raises(ValueError, match="unknown SCAN split"):
        SCANDataModule(split="template_right")
    with pytest.raises(ValueError, match="length_cutoff must be in"):
        scan_split("length", length_cutoff=48)
    with pytest.raises(ValueError, match="length_cutoff must be in"):
        SCANDataModule(split="length", length_cutoff=0)


# --- reading the released files ----------------------------------------------------------------


def test_reader_round_trip(tmp_path):
    pairs = [("jump", "I_JUMP"), ("walk left twice", "I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK")]
    path = tmp_path / "tasks.txt"
    path.write_text(
        "IN: jump OUT: I_JUMP\n\nIN: walk left twice OUT: I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK \n"
    )
    assert read_scan_file(path) == pairs
    write_scan_file(tmp_path / "copy.txt", pairs)
    assert read_scan_file(tmp_path / "copy.txt") == pairs


def test_reader_rejects_malformed_lines(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("IN: jump OUT: I_JUMP\njump I_JUMP\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'IN: <command> OUT: <actions>'"):
        read_scan_file(path)
    # a file cut short mid-token, or another task's words, named with the file and line
    path.write_text("IN: jump OUT: I_JUMP\nIN: turn left OUT: I_TURN_LE\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'I_TURN_LE' not SCAN words or actions .*git clone"):
        read_scan_file(path)
    path.write_text("IN: fly OUT: I_FLY\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: 'fly', 'I_FLY' not SCAN words or actions"):
        read_scan_file(path)


def test_missing_files_say_how_to_get_them(tmp_path):
    hint = r"git clone https://github.com/brendenlake/SCAN.*generate SCAN from its grammar"
    with pytest.raises(FileNotFoundError, match=hint):
        read_scan_split(tmp_path / "nowhere", "simple")
    with pytest.raises(
        FileNotFoundError, match="tasks_train_addprim_jump.txt not found: .*" + hint
    ):
        read_scan_split(tmp_path, "addprim_jump")
    with pytest.raises(FileNotFoundError, match=hint):
        SCANDataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()


def test_read_split_files_and_length_resplit_from_tasks_txt(tmp_path, all_pairs):
    sample = all_pairs[::2000]
    write_scan_file(tmp_path / "add_prim_split" / "tasks_train_addprim_jump.txt", sample[:4])
    write_scan_file(tmp_path / "add_prim_split" / "tasks_test_addprim_jump.txt", sample[4:])
    assert read_scan_split(tmp_path, "addprim_jump") == (sample[:4], sample[4:])
    write_scan_file(tmp_path / "tasks.txt", sample)
    train, test = read_scan_split(tmp_path, "length", length_cutoff=5)
    assert train == [pair for pair in sample if len(pair[1].split()) <= 5]
    assert test == [pair for pair in sample if len(pair[1].split()) > 5]
    assert train and test


def test_datamodule_reads_released_files(tmp_path):
    train = [("walk", "I_WALK"), ("run twice", "I_RUN I_RUN"), ("look left", "I_TURN_LEFT I_LOOK")]
    test = [
        ("jump around right", " ".join(["I_TURN_RIGHT I_JUMP"] * 4)),
        ("turn left", "I_TURN_LEFT"),
    ]
    write_scan_file(tmp_path / "simple_split" / "tasks_train_simple.txt", train)
    write_scan_file(tmp_path / "simple_split" / "tasks_test_simple.txt", test)
    dm = SCANDataModule(split="simple", data_dir=str(tmp_path), batch_size=8, val_fraction=0.0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.pairs == train and dm.val_set.pairs == test and dm.test_set.pairs == test
    (batch,) = list(dm.test_dataloader())
    decoded = [
        (dm.decode_src(s), dm.decode_tgt(t))
        for s, t in zip(batch["src"], batch["tgt"], strict=True)
    ]
    assert decoded == test
    too_few = SCANDataModule(split="simple", data_dir=str(tmp_path), val_fraction=0.1)
    with pytest.raises(ValueError, match=r"val_fraction=0.1 of 3 training lines holds out none; .*0.333.*val_fraction=0"):
        too_few.setup("fit")


# --- vocabulary --------------------------------------------------------------------------------


def test_vocabulary_ids_are_fixed():
    src, tgt = SCANVocabulary(COMMAND_WORDS), SCANVocabulary(ACTIONS)
    assert src.tokens == (
        "<pad>",
        "<bos>",
        "<eos>",
        "after",
        "and",
        "around",
        "jump",
        "left",
        "look",
        "opposite",
        "right",
        "run",
        "thrice",
        "turn",
        "twice",
        "walk",
    )
    assert tgt.tokens == (
        "<pad>",
        "<bos>",
        "<eos>",
        "I_JUMP",
        "I_LOOK",
        "I_RUN",
        "I_TURN_LEFT",
        "I_TURN_RIGHT",
        "I_WALK",
    )
    assert src.encode("jump twice after walk left") == [6, 14, 3, 15, 7]
    assert tgt.encode("I_TURN_LEFT I_WALK I_JUMP") == [6, 8, 3]


def test_decode_inverts_encode_on_all_commands(all_pairs):
    src, tgt = SCANVocabulary(COMMAND_WORDS), SCANVocabulary(ACTIONS)
    assert all(src.decode(src.encode(command)) == command for command, _ in all_pairs)
    assert all(tgt.decode(tgt.encode(actions)) == actions for _, actions in all_pairs)


def test_decode_reads_up_to_eos_and_skips_pad_and_bos():
    tgt = SCANVocabulary(ACTIONS)
    assert tgt.decode(torch.tensor([1, 3, 3, 2, 0, 0])) == "I_JUMP I_JUMP"
    assert tgt.decode([1, 8, 2, 5, 5]) == "I_WALK"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tgt.decode([1, 9])
    with pytest.raises(ValueError, match="'fly'.*not in the SCAN vocabulary"):
        SCANVocabulary(COMMAND_WORDS).encode("fly left")


# --- datamodule --------------------------------------------------------------------------------


def test_attributes_available_after_construction():
    dm = SCANDataModule(split="addprim_jump")
    assert (dm.src_vocab_size, dm.tgt_vocab_size) == (16, 9)
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (0, 1, 2)
    assert (dm.max_src_len, dm.max_tgt_len) == (9, 50)
    with pytest.raises(ValueError, match="set data.tgt_vocab_size=9"):
        SCANDataModule(tgt_vocab_size=8)


def test_validation_is_a_held_out_part_of_train(length_datamodule):
    dm = length_datamodule
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15291, 1699, 3920)
    train, val = set(dm.train_set.pairs), set(dm.val_set.pairs)
    assert not train & val and train | val == set(scan_split("length")[0])
    dm_no_val = SCANDataModule(split="length", val_fraction=0.0)
    dm_no_val.setup("fit")
    assert dm_no_val.val_set.pairs == dm_no_val.test_set.pairs and len(dm_no_val.train_set) == 16990


def test_batches_are_padded_with_bos_and_eos(length_datamodule):
    dm = length_datamodule
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"src", "tgt", "src_padding_mask", "tgt_padding_mask"}
    src, tgt = batch["src"], batch["tgt"]
    assert src.dtype == tgt.dtype == torch.long and src.shape[0] == tgt.shape[0] == 32
    assert batch["src_padding_mask"].dtype == batch["tgt_padding_mask"].dtype == torch.bool
    assert torch.equal(batch["src_padding_mask"], src == dm.pad_id)
    assert torch.equal(batch["tgt_padding_mask"], tgt == dm.pad_id)
    assert (tgt[:, 0] == dm.bos_id).all()
    tgt_lengths = (~batch["tgt_padding_mask"]).sum(1)
    assert (tgt[torch.arange(32), tgt_lengths - 1] == dm.eos_id).all()
    assert ((tgt == dm.eos_id).sum(1) == 1).all() and ((tgt == dm.bos_id).sum(1) == 1).all()
    assert src.shape[1] == (~batch["src_padding_mask"]).sum(1).max()
    assert tgt.shape[1] == tgt_lengths.max() <= 22 + 2
    for row_src, row_tgt in zip(src, tgt, strict=True):
        assert interpret_scan_command(dm.decode_src(row_src)) == tuple(
            dm.decode_tgt(row_tgt).split()
        )


def test_test_batches_cover_the_test_set_in_order(length_datamodule):
    dm = length_datamodule
    batches = list(dm.test_dataloader())
    assert [b["src"].shape[0] for b in batches] == [512] * 7 + [3920 - 7 * 512]
    assert max(b["tgt"].shape[1] for b in batches) == dm.max_tgt_len
    assert max(b["src"].shape[1] for b in batches) <= dm.max_src_len
    decoded = [dm.decode_src(row) for b in batches for row in b["src"]]
    assert decoded == [command for command, _ in dm.test_set.pairs]


def test_validation_batches_are_the_validation_set_and_training_is_shuffled(length_datamodule):
    dm = length_datamodule
    decoded = [dm.decode_src(row) for b in dm.val_dataloader() for row in b["src"]]
    assert decoded == [command for command, _ in dm.val_set.pairs]
    # the training order is not the set's order, and another epoch gives another one
    train = dm.train_dataloader()
    first = [dm.decode_src(row) for row in next(iter(train))["src"]]
    assert first != [command for command, _ in dm.train_set.pairs[: len(first)]]
    train.sampler.set_epoch(1)
    assert [dm.decode_src(row) for row in next(iter(train))["src"]] != first


def test_validation_hold_out_depends_on_the_seed():
    held_out = []
    for seed in (0, 1):
        dm = SCANDataModule(split="length", seed=seed)
        dm.setup("fit")
        held_out.append(set(dm.val_set.pairs))
    assert held_out[0] != held_out[1]


def test_seeded_shuffle_and_simple_split_are_reproducible():
    def first_batch_and_test(seed: int):
        dm = SCANDataModule(split="simple", batch_size=16, seed=seed)
        return next(iter(dm.train_dataloader()))["src"], dm.test_set.pairs

    src_a, test_a = first_batch_and_test(0)
    src_b, test_b = first_batch_and_test(0)
    src_c, test_c = first_batch_and_test(1)
    assert torch.equal(src_a, src_b) and test_a == test_b
    assert set(test_a) != set(test_c)


@pytest.mark.parametrize(
    "name, split, sizes",
    [
        ("scan_simple", "simple", (15056, 1672, 4182)),
        ("scan_length", "length", (15291, 1699, 3920)),
        ("scan_addprim_jump", "addprim_jump", (13203, 1467, 7706)),
    ],
)
def test_configs_build_the_datamodule(name, split, sizes):
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    dm = instantiate(cfg)
    assert isinstance(dm, SCANDataModule) and dm.split == split and dm.batch_size == 256
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == sizes
    if split == "addprim_jump":
        assert ("jump", "I_JUMP") in dm.train_set.pairs
