"""Listening with a trained MATS: audio files in, captions / tags / answers out.

The Python API behind `python -m mats_jax.generate` (docs/architecture.md):

    from mats_jax.inference.listener import Listener
    listener = Listener.from_workdir("workdirs/default")        # the trainer's workdir
    embeddings, files, errors = listener.embed_audio(["dog.wav", "rain.flac"])
    texts = listener.describe(embeddings, task="caption")       # paper's beam search by default

The CLAP *audio* embedding replaces the text embedding the model was trained on; with a memory
bank (`python -m mats_jax.memory_bank`) Santa first pulls it toward the text region.

Each batch is split over all of this process's devices (the GPUs of a node, the chips of a TPU
VM), with the models replicated: data-parallel decoding needs no communication (beam search
keeps every batch element's beams on its own device).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from anyascii import anyascii
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mats_jax.clap.batches import embed_audio_files
from mats_jax.clap.load import load_clap_or_random
from mats_jax.clap.model import CLAP
from mats_jax.data.records import instruction_for
from mats_jax.mats.build import build_mats
from mats_jax.mats.model import MATS
from mats_jax.mats.prompt import PromptBuilder
from mats_jax.mats.santa import MemoryBank, explain_retrieval, retrieve_with_noise
from mats_jax.models.sampler import GenerationConfig, generate
from mats_jax.runtime.sharding import data_parallel_mesh, replicate, split_rows
from mats_jax.training import steps
from mats_jax.training import workdir as workdirs

# Where the original's transliteration (the `unidecode` package, GPL-2.0, which we do not ship)
# writes something other than `anyascii` in Latin-1, Latin Extended-A, General Punctuation and
# for U+FFFD (what an incomplete UTF-8 byte sequence decodes to): with these, the two agree on
# every character of those blocks. Elsewhere (other scripts, symbols) anyascii's is used.
_AS_THE_ORIGINAL = str.maketrans(
    {
        "\u00a2": "C/",
        "\u00a3": "PS",
        "\u00a4": "$?",
        "\u00a5": "Y=",
        "\u00a7": "SS",
        "\u00a9": "(c)",
        "\u00ae": "(r)",
        "\u00b7": "*",
        "\u00bc": " 1/4",
        "\u00bd": " 1/2",
        "\u00be": " 3/4",
        "\u00c6": "AE",
        "\u00d7": "x",
        "\u0138": "k",
        "\u014a": "NG",
        "\u0152": "OE",
        "\u200b": " ",
        "\u2014": "--",
        "\u2015": "--",
        "\u201a": ",",
        "\u201e": ",,",
        "\u2023": "*>",
        "\u2027": ".",
        "\u2028": "\n",
        "\u2029": "\n\n",
        "\u2043": "--",
        "\u2045": "-[",
        "\u2046": "]-",
        "\u204b": "PP",
        "\u204c": "(]",
        "\u204d": "[)",
        "\u2052": "%",
        **dict.fromkeys(
            "\u204f\u2050\u2051\u2054\u2055\u2056\u2058\u2059\u205a\u205b\u205c\u205d\u205e", ""
        ),
        "\ufffd": "",
    }
)


def transliterate(text: str) -> str:
    """`text` in ASCII as the original's `unidecode` writes it (see _AS_THE_ORIGINAL)."""
    return anyascii(text.translate(_AS_THE_ORIGINAL))


def postprocess(text: str) -> str:
    """A generated text cleaned up as the original's are, step for step, so that scores compare:
    `capitalize()` (first character upper-cased, every other lower-cased) and `strip()` as its
    `generate` returns texts, then its `post_process`: ASCII transliteration, ", " after every
    comma and none before it, every run of spaces one space, stripped."""
    text = transliterate(text.capitalize().strip())
    text = re.sub(" +", " ", text.replace(",", " , ")).replace(" ,", ",")
    return text.strip()


@dataclasses.dataclass
class Listener:
    model: MATS
    tokenizer: object
    clap: CLAP | None
    builder: PromptBuilder
    bank: MemoryBank | None
    santa: ml_collections.ConfigDict
    clap_checkpoint: str | None  # None: CLAP has random weights (nothing it hears means anything)
    step: int  # the training step of the checkpoint
    mesh: Mesh = dataclasses.field(
        default_factory=data_parallel_mesh
    )  # batches split over its devices

    def __post_init__(self):
        replicate(self.mesh, self.model)
        replicate(self.mesh, self.clap)
        if self.bank is not None:
            self.bank = jax.device_put(self.bank, NamedSharding(self.mesh, PartitionSpec()))

    @classmethod
    def from_workdir(
        cls,
        workdir: str | Path,
        *,
        step: int | None = None,
        clap_checkpoint: str | None = None,
        load_clap: bool = True,
    ) -> Listener:
        """The model of the trainer's latest (or `step`) checkpoint in `workdir`, its CLAP
        (the training config's, unless `clap_checkpoint`; none with load_clap=False), and the
        memory bank if one was built."""
        workdir = Path(workdir)
        config = workdirs.read_config(workdir)
        model, tokenizer = build_mats(config)
        graphdef, trainable, rngs, frozen = steps.split(model)
        step, trainable, rngs = workdirs.restore_weights(workdir, config, step, trainable, rngs)
        model = nnx.merge(graphdef, trainable, rngs, frozen)
        model.eval()
        clap_checkpoint = clap_checkpoint or config.clap.checkpoint or None
        clap = load_clap_or_random(clap_checkpoint, seed=config.clap.seed) if load_clap else None
        bank_folder = workdir / workdirs.BANK_FOLDER
        bank = MemoryBank.load(bank_folder) if bank_folder.is_dir() else None
        builder = PromptBuilder(tokenizer, tail_length=config.data.tail_length)
        return cls(model, tokenizer, clap, builder, bank, config.santa, clap_checkpoint, step)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **kwargs: Any) -> Listener:
        """`from_workdir` for one checkpoint folder, WORKDIR/checkpoints/STEP."""
        checkpoint = Path(checkpoint)
        if not (checkpoint.name.isdigit() and checkpoint.parent.name == "checkpoints"):
            raise FileNotFoundError(
                f"{checkpoint}: not a checkpoint folder (WORKDIR/checkpoints/STEP)"
            )
        return cls.from_workdir(checkpoint.parent.parent, step=int(checkpoint.name), **kwargs)

    def embed_audio(
        self, paths: Sequence[str | Path], *, batch_size: int = 8
    ) -> tuple[np.ndarray, list[str], dict[str, str]]:
        """(CLAP audio embeddings [N, dim], the N files embedded, {bad file: reason})."""
        return embed_audio_files(
            self.clap,
            paths,
            batch_size=batch_size,
            to_devices=lambda clips: split_rows(self.mesh, clips),
        )

    def paper_generation(self, **changes: Any) -> GenerationConfig:
        """The paper's generation settings for this model's tokenizer, with `changes` applied."""
        config = GenerationConfig.paper(
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.builder.pad
        )
        return dataclasses.replace(config, **changes)

    def describe(
        self,
        audio_embeddings: np.ndarray,
        *,
        task: str = "caption",
        question: str | Sequence[str] | None = None,
        tag: str = "",
        santa: bool = True,
        generation: GenerationConfig | None = None,
        seed: int = 0,
        rows: slice | None = None,
    ) -> list[str]:
        """One text per embedding, for the task's paper instruction (or the question: one for
        all, or one per embedding).

        `rows` (a length this process's device count divides): texts for those rows of the batch
        only, one process's share of a batch spread over several
        (`mats_jax.inference.process_shares`). Santa's noise draws and the prompt padding stay
        the whole batch's, so each text is the one the whole batch gives in one process."""
        n = len(audio_embeddings)
        questions = (
            [question] * n if question is None or isinstance(question, str) else list(question)
        )
        if len(questions) != n:
            raise ValueError(f"{len(questions)} questions for {n} audio embeddings")
        if n == 0:
            return []
        instructions = [instruction_for(task, q) for q in questions]
        share = slice(0, n) if rows is None else rows
        wanted = len(audio_embeddings[share])
        embeddings = split_rows(self.mesh, audio_embeddings[share])
        start, count = share.start, len(embeddings)  # padded to the devices
        s = self.santa
        if santa and self.bank is not None:
            # `retrieve`'s draws for the whole (padded) batch, this share's rows of them
            noise = jax.random.normal(
                jax.random.key(seed), (max(n, start + count), s.top_l, embeddings.shape[1])
            )
            embeddings = retrieve_with_noise(
                self.bank,
                embeddings,
                split_rows(self.mesh, noise[start : start + count]),
                temperature=s.temperature,
                mix=s.mix,
                variant=s.variant,
                noise_variance=self.model.config.noise_variance,
            )
        prompt = self.builder.inference_batch(instructions, [tag] * n)
        prompt = dataclasses.replace(
            prompt,
            tail=split_rows(self.mesh, prompt.tail[share]),
            tail_mask=split_rows(self.mesh, prompt.tail_mask[share]),
        )
        sequence, mask = self.model.prompt_embeddings(embeddings, prompt)
        new = generate(
            self.model.llm,
            embeddings=sequence,
            attention_mask=mask,
            config=generation or self.paper_generation(),
        )
        return [
            postprocess(self.tokenizer.decode(ids, skip_special_tokens=True))
            for ids in new[:wanted]
        ]

    def explain_santa(
        self, audio_embeddings: np.ndarray, *, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """What Santa mixes into each embedding in `describe(..., seed=seed)`, for a person to
        see: (nearest cluster [N], bank rows [N, top_l], their weights [N, top_l]); None without
        a memory bank."""
        if self.bank is None:
            return None
        n, s = len(audio_embeddings), self.santa
        found = explain_retrieval(
            self.bank,
            split_rows(self.mesh, audio_embeddings),  # padded as in describe: the same noise
            key=jax.random.key(seed),
            top_l=s.top_l,
            temperature=s.temperature,
            noise_variance=self.model.config.noise_variance,
            variant=s.variant,
        )
        cluster, rows, weights = (np.asarray(v)[:n] for v in found)
        return cluster, rows, weights
