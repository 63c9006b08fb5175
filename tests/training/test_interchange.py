"""`python -m mats_jax.convert mats` and `python -m mats_jax.export`: the original MATS checkpoint
(the golden fixture) imports into a workdir whose mapper and projector give the original code's
outputs; export gives back the same tensors; the PEFT export loads into transformers + peft and
gives our LLM's logits; a missing key is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mats_jax.convert.__main__ import main
from mats_jax.convert.hf_io import read_safetensors
from mats_jax.export import main as export
from mats_jax.inference.listener import Listener
from tests.support.outputs import fake_workdir, marker_command, one_line, other_files, snapshot
from tests.support.paths import FIXTURE, ROOT, shared

CONFIG = """
from mats_jax.config import base

def get_config():
    c = base()
    c.llm.checkpoint = {llm!r}
    c.clap.dim = 32
    c.mapper.update(dim=64, prefix_length=4, clip_length=4, num_layers=2, num_heads=8)
    c.lora.update(rank=2, alpha=8.0)
    return c
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mats")
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp / "llm")
    from mats_jax.models.tokenizer import load_tokenizer
    from mats_jax.runtime.assets import smollm2_gguf_path

    load_tokenizer(smollm2_gguf_path()).save_pretrained(tmp / "llm")
    (tmp / "config.py").write_text(CONFIG.format(llm=str(tmp / "llm")))
    fixture = dict(np.load(shared(FIXTURE)))
    state = {
        k.removeprefix("model/"): torch.from_numpy(v)
        for k, v in fixture.items()
        if k.startswith("model/")
    }
    torch.save({"model": state}, tmp / "mats.pth")
    return tmp, fixture, state


def test_import_reproduces_the_original_outputs_and_export_round_trips(original, tmp_path):
    tmp, fixture, state = original
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp / "mats.pth"),
                "--out",
                str(tmp_path / "work"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 0
    )
    listener = Listener.from_workdir(tmp_path / "work", load_clap=False)
    mapped = listener.model.mapper(jnp.asarray(fixture["input/clap_embedding"]))
    np.testing.assert_allclose(
        np.asarray(mapped), fixture["expected/mapper_output"], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(listener.model.projector(mapped)),
        fixture["expected/prefix_embeddings"],
        atol=1e-5,
        rtol=0,
    )

    assert (
        export(
            [
                "--workdir",
                str(tmp_path / "work"),
                "--format",
                "mats-torch",
                "--out",
                str(tmp_path / "back.pth"),
            ]
        )
        == 0
    )
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    kept = {k: v for k, v in state.items() if not k.startswith("ln_audio") and "inv_freq" not in k}
    assert set(back) == set(kept)
    for key, value in kept.items():
        assert torch.equal(back[key], value), key


def test_a_missing_key_is_named(original, tmp_path, capsys):
    tmp, _, state = original
    broken = dict(state)
    del broken["audio_mapper.transformer.layers.1.mlp.fc2.bias"]
    torch.save({"model": broken}, tmp_path / "broken.pth")
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp_path / "broken.pth"),
                "--out",
                str(tmp_path / "w"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 1
    )
    assert "mapper.layers.1.mlp.fc2.bias" in capsys.readouterr().err


def test_peft_export_loads_into_transformers_and_matches_our_logits(original, tmp_path):
    import peft
    import transformers

    tmp, fixture, state = original
    assert (
        main(
            [
                "mats",
                "--source",
                str(tmp / "mats.pth"),
                "--out",
                str(tmp_path / "work"),
                "--config",
                str(tmp / "config.py"),
            ]
        )
        == 0
    )
    assert (
        export(
            [
                "--workdir",
                str(tmp_path / "work"),
                "--format",
                "hf-peft",
                "--out",
                str(tmp_path / "peft"),
            ]
        )
        == 0
    )

    base = transformers.LlamaForCausalLM.from_pretrained(
        tmp / "llm", torch_dtype=torch.float32
    ).eval()
    ids = np.random.default_rng(0).integers(0, 49152, (2, 12))
    with torch.no_grad():
        without_lora = base(torch.from_numpy(ids)).logits.numpy()
        reference = peft.PeftModel.from_pretrained(base, tmp_path / "peft").eval()
        expected = reference(torch.from_numpy(ids)).logits.numpy()
    assert (
        reference.peft_config["default"].r == 2 and reference.peft_config["default"].lora_alpha == 8
    )
    assert np.abs(expected - without_lora).max() > 1e-3  # the adapter was loaded and acts
    listener = Listener.from_workdir(tmp_path / "work", load_clap=False)
    logits, _ = listener.model.llm(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    bridge = read_safetensors(tmp_path / "peft" / "mapper.safetensors")
    assert set(bridge) == {k for k in state if k.startswith(("audio_mapper.", "audio_llama_proj."))}
    for key, value in bridge.items():
        np.testing.assert_array_equal(value, state[key].numpy())


# An original-code checkpoint of MATS-LLaMA at configs/mats_llama.py's sizes (the mapper at the
# paper's size, LoRA on all 32 layers of Vicuna-7B), with every buffer the original keeps, imports
# with no LLM weights anywhere and exports back bit for bit.
MATS_LLAMA = ROOT / "configs" / "mats_llama.py"
VICUNA_BF16_BYTES = 6.7e9 * 2  # what loading (or making) the LLM alone would take


@pytest.fixture
def restores_key_type():
    """The MATS-LLaMA config sets the process' default PRNG implementation: reset it after."""
    impl = jax.config.jax_default_prng_impl
    yield
    jax.config.update("jax_default_prng_impl", impl)


@pytest.fixture(scope="module")
def imported_vicuna(tmp_path_factory):
    """(workdir, trained tensors, buffers, peak memory of the import in bytes): the import ran as
    `python -m mats_jax.convert mats` with configs/mats_llama.py and no --llm."""
    import json
    import subprocess
    import sys

    from mats_jax.convert.__main__ import load_config_file
    from tests.references import mats_original

    tmp = tmp_path_factory.mktemp("vicuna")
    config = load_config_file(MATS_LLAMA)
    assert config.llm.checkpoint == "" and config.llm.architecture.hidden_size == 4096
    shapes = mats_original.trained_shapes(
        clap_dim=config.clap.dim,
        dim=config.mapper.dim,
        prefix_length=config.mapper.prefix_length,
        clip_length=config.mapper.clip_length,
        num_layers=config.mapper.num_layers,
        mlp_ratio=config.mapper.mlp_ratio,
        hidden_size=config.llm.architecture.hidden_size,
        llm_layers=config.llm.architecture.num_hidden_layers,
        lora_rank=config.lora.rank,
    )
    buffers = (
        mats_original.msclap_audio_buffers()
        | mats_original.rotary_buffers(32, 128)
        | mats_original.legacy_gpt2_buffers()
    )
    trained = mats_original.write_original_checkpoint(tmp / "checkpoint_best.pth", shapes, buffers)
    # the command, and its peak resident memory: VmHWM of its own address space (ru_maxrss would
    # include the resident size of the test process it was forked from)
    script = (
        "import json, re, runpy, sys\n"
        "sys.argv = ['mats_jax.convert', *json.loads(sys.argv[1])]\n"
        "try:\n"
        "    runpy.run_module('mats_jax.convert', run_name='__main__')\n"
        "finally:\n"
        "    status = open('/proc/self/status').read()\n"
        "    print('peak', int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024)\n"
    )
    argv = ["mats", "--source", str(tmp / "checkpoint_best.pth"), "--out", str(tmp / "work")]
    argv += ["--config", str(MATS_LLAMA)]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak = int(done.stdout.split("peak")[-1])
    return tmp / "work", trained, buffers, peak


def test_an_original_vicuna_checkpoint_imports_without_the_llm_and_exports_bit_exact(
    imported_vicuna, tmp_path, restores_key_type
):
    work, trained, buffers, peak = imported_vicuna
    assert len([k for k in buffers if k.startswith("audio_encoder.")]) == 20
    # no LLM weights were read (there are none here) or made: the import held the trained
    # parts, their optimiser state and the file, far below what the 7B LLM alone needs
    from mats_jax.training.workdir import read_config

    config = read_config(work)
    assert config.llm.checkpoint == "" and config.llm.architecture.num_hidden_layers == 32
    assert peak < 6e9 < VICUNA_BF16_BYTES, peak

    assert (
        export(["--workdir", str(work), "--format", "mats-torch", "--out", str(tmp_path / "b.pth")])
        == 0
    )
    back = torch.load(tmp_path / "b.pth", weights_only=True)["model"]
    expected = {k: v for k, v in trained.items() if not k.startswith("ln_audio.")}  # unused
    assert set(back) == set(expected)  # every trained tensor, and no buffer
    for key, value in expected.items():
        assert back[key].dtype == torch.float32, key
        assert np.array_equal(back[key].numpy(), value.numpy()), key


def test_generating_from_it_without_an_llm_checkpoint_fails_in_one_line(
    imported_vicuna, restores_key_type
):
    from mats_jax.config import ConfigError

    work, *_ = imported_vicuna
    with pytest.raises(ConfigError) as raised:
        Listener.from_workdir(work, load_clap=False)
    message = str(raised.value)
    assert "\n" not in message and "--config.llm.checkpoint" in message, message


def test_convert_mats_never_destroys_an_existing_folder(original, tmp_path, capsys):
    tmp, fixture, _ = original

    def convert(out, *extra):
        args = ["mats", "--source", str(tmp / "mats.pth"), "--out", str(out)]
        return main([*args, "--config", str(tmp / "config.py"), *extra]), capsys.readouterr().err

    for target in (fake_workdir(tmp_path / "workdir"), other_files(tmp_path / "others")):
        before = snapshot(target)
        code, err = convert(target, "--overwrite")
        assert code == 1 and one_line(err) == (
            f"error: {target} exists and is not a previous `convert mats` output; "
            "choose another --out"
        )
        assert snapshot(target) == before

    work = tmp_path / "work"
    assert convert(work)[0] == 0
    assert marker_command(work) == "convert mats"
    before = snapshot(work)
    code, err = convert(work)
    assert code == 1 and one_line(err) == (
        f"error: {work} is a previous `convert mats` output; pass --overwrite to replace it"
    )
    assert snapshot(work) == before
    assert convert(work, "--overwrite")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["others", "work", "workdir"]
    listener = Listener.from_workdir(work, load_clap=False)  # the renamed checkpoint restores
    np.testing.assert_allclose(
        np.asarray(listener.model.mapper(jnp.asarray(fixture["input/clap_embedding"]))),
        fixture["expected/mapper_output"],
        atol=1e-5,
        rtol=0,
    )

    (work / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n')  # trained since
    before = snapshot(work)
    code, err = convert(work, "--overwrite")
    assert code == 1 and one_line(err) == (
        f"error: {work} is a previous `convert mats` workdir that has been used since (it now "
        "holds metrics.jsonl); choose another --out"
    )
    assert snapshot(work) == before


def test_importing_with_an_llm_of_another_architecture_is_refused(
    imported_vicuna, tmp_path, capsys, restores_key_type
):
    from tests.support.models import tiny_llama_folder

    work, *_ = imported_vicuna
    llm = tiny_llama_folder(tmp_path / "llm")
    capsys.readouterr()  # transformers' progress bars
    argv = ["mats", "--source", str(work.parent / "checkpoint_best.pth"), "--out"]
    argv += [str(tmp_path / "w"), "--config", str(MATS_LLAMA), "--llm", str(llm)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vocab_size 49152, but llm.architecture says 32001" in err, err
    assert not (tmp_path / "w").exists()


def test_an_import_is_marked_and_new_runs_start_from_its_weights(original, tmp_path):
    """`convert mats` marks its workdir as an import of the .pth: the trainer refuses to resume
    it, a new run's `train.init_from` takes its trainable weights, and a source of another
    model is refused naming the config key, or the parameter whose shape differs."""
    from mats_jax.config import ConfigError
    from mats_jax.mats.build import abstract_mats
    from mats_jax.runtime.fileio import ModelFileError
    from mats_jax.training import steps, workdir
    from tests.support.models import tiny_llama_folder

    tmp, _, _ = original
    work = tmp_path / "imported"
    source = ["mats", "--source", str(tmp / "mats.pth"), "--config", str(tmp / "config.py")]
    assert main([*source, "--out", str(work)]) == 0
    assert workdir.imported_from(work) == str(tmp / "mats.pth")
    config = workdir.read_config(work)
    with pytest.raises(ConfigError, match=f"--config.train.init_from={work}$"):
        workdir.start_of_run(work, config)

    config.train.init_from = str(work)
    start = workdir.start_of_run(tmp_path / "new", config)
    assert (start.path, start.imported_from) == (work / "checkpoints" / "0", str(tmp / "mats.pth"))
    _, trainable, _, _ = steps.split(abstract_mats(config))
    restored = workdir.restore_init_from(start, config, trainable)
    _, expected, _, _ = steps.split(Listener.from_workdir(work, load_clap=False).model)
    ours, theirs = nnx.to_flat_state(restored), nnx.to_flat_state(expected)
    assert len(ours) == len(theirs) > 0
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(ours, theirs))

    config.lora.rank = 4
    with pytest.raises(ConfigError, match="^train.init_from: .* with lora.rank 2, this run has 4$"):
        workdir.start_of_run(tmp_path / "new", config)
    config.lora.rank = 2
    config.llm.checkpoint = str(tiny_llama_folder(tmp_path / "narrow"))  # hidden size 32, not 48
    _, narrow, _, _ = steps.split(abstract_mats(config))
    with pytest.raises(ModelFileError) as raised:
        workdir.restore_init_from(workdir.start_of_run(tmp_path / "new", config), config, narrow)
    assert str(raised.value).startswith(f"{work / 'checkpoints' / '0'} holds ")
    assert "of shape (" in str(raised.value) and "\n" not in str(raised.value)
