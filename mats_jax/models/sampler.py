"""Greedy, sampling and beam-search decoding that reproduces transformers' `generate` (v5.24).

The whole decode runs in one jitted function per (model structure, config, shapes): prefill the
KV cache with the prompt, then a `jax.lax.while_loop` that feeds one token per step and stops as
soon as every row (or every beam-search batch entry) is done. There is no Python round trip per
token, and a second call with the same shapes reuses the compiled program. The model goes into
`jax.jit` as a pytree (NNX modules are pytrees): jit's cache key is then the module's structure
and static attributes plus the config, and flattening a module is far cheaper than calling
`nnx.split` on every call.

Parity notes (why the code looks the way it does):
- Logits processors run in Hugging Face's order: repetition penalty, no-repeat-n-gram, min length,
  then (sampling only) temperature, top-k, top-p. Beam search applies them to log-softmax scores,
  greedy and sampling to raw logits.
- They look at the prompt ids plus the generated ids; a prompt given as embeddings has no ids, so
  they see only generated tokens. Left-padding slots of a token prompt are not penalised.
  (Batched HF 5.24 with an embeddings prompt also skips the first `padding` generated tokens in
  the repetition penalty, because it drops that many leading input_ids; we do not copy that: a
  row's output does not depend on its padding.)
- "Length" for `min_length` is HF's `input_ids` length: the padded prompt length plus the tokens
  generated so far (for an embeddings prompt HF subtracts the prompt length from `min_length`,
  which is the same condition).
- Beam search is HF's vectorised `_beam_search`: keep `max(2, 1 + n_eos) * num_beams` candidates,
  finished hypotheses scored by sum log-prob / generated_length ** length_penalty, the
  early-stopping heuristic, and the `-1e9` bookkeeping, in the same float32 operation order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mats_jax.models.decoder import DecoderLM, positions_from_mask
from mats_jax.models.layers import KVCache, take_beams

NEG = -1.0e9  # HF beam search's "very large negative" score offset


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings with Hugging Face's names, defaults and semantics.

    `top_k=0`, `top_p=1.0`, `temperature=1.0`, `repetition_penalty=1.0` and
    `no_repeat_ngram_size=0` switch the corresponding processor off. `pad_token_id` defaults to
    the first EOS id, as in HF.
    """

    max_new_tokens: int = 20
    min_length: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        eos = self.eos_token_id
        if isinstance(eos, (int, np.integer)):
            eos = (int(eos),)
        elif eos is not None:
            eos = tuple(int(e) for e in eos) or None
        object.__setattr__(self, "eos_token_id", eos)
        if self.pad_token_id is None and eos is not None:
            object.__setattr__(self, "pad_token_id", eos[0])
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError("max_new_tokens and num_beams must be positive")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(
                f"early_stopping must be True, False or 'never', not {self.early_stopping!r}"
            )
        if self.do_sample and self.temperature <= 0:
            raise ValueError("temperature must be positive when sampling")
        if self.do_sample and self.num_beams > 1:
            raise NotImplementedError("beam sampling is not supported")

    @classmethod
    def paper(
        cls, *, eos_token_id: int | tuple[int, ...], pad_token_id: int | None = None
    ) -> GenerationConfig:
        """MATS paper settings: beam 4, no sampling, 200 new tokens, min length 1,
        no_repeat_ngram_size 2, repetition_penalty 2.0, length_penalty 1.0, stop at EOS."""
        return cls(
            max_new_tokens=200,
            min_length=1,
            num_beams=4,
            do_sample=False,
            no_repeat_ngram_size=2,
            repetition_penalty=2.0,
            length_penalty=1.0,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )

    @property
    def fill_token(self) -> int:
        """What greedy and sampling emit after a row ends (any id without EOS: no row ends)."""
        return 0 if self.pad_token_id is None else self.pad_token_id

    @property
    def beam_fill_token(self) -> int:
        """What HF's beam search writes after a hypothesis ends.

        HF computes `pad_token_id or eos_token_id[0]`, so a pad id of 0 is replaced by the EOS id.
        """
        if self.eos_token_id is None:
            return -1
        return self.pad_token_id or self.eos_token_id[0]


def generate(
    model: DecoderLM,
    *,
    tokens: jax.Array | np.ndarray | None = None,
    embeddings: jax.Array | np.ndarray | None = None,
    attention_mask: jax.Array | np.ndarray | None = None,
    config: GenerationConfig,
    rng: jax.Array | None = None,
) -> np.ndarray:
    """New tokens [B, n <= max_new_tokens] for a left-padded prompt batch; pad after EOS.

    Pass the prompt as token ids [B, T] or as embeddings [B, T, D] (MATS splices audio
    embeddings into the prompt). attention_mask [B, T] marks real prompt positions. `rng` (a
    JAX key) is required when sampling.
    """
    if (tokens is None) == (embeddings is None):
        raise ValueError("pass exactly one of tokens or embeddings")
    if config.do_sample and rng is None:
        raise ValueError("sampling needs an rng key")
    prompt = jnp.asarray(tokens if tokens is not None else embeddings)
    if prompt.shape[1] < 1:
        raise ValueError("the prompt must hold at least one position")
    mask = (
        jnp.ones(prompt.shape[:2], jnp.bool_)
        if attention_mask is None
        else jnp.asarray(attention_mask).astype(jnp.bool_)
    )
    out, length = _generate(
        model,
        prompt.astype(jnp.int32) if tokens is not None else None,
        prompt if embeddings is not None else None,
        mask,
        None if not config.do_sample else rng,
        config=config,
    )
    return np.asarray(out)[:, : int(length)]


# ---------------------------------------------------------------------------------------------
# Logits processors and warpers (HF's order and float32 arithmetic)


def penalise_repeats(scores: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """HF's RepetitionPenalty: divide positive / multiply negative scores of seen tokens."""
    return jnp.where(seen, jnp.where(scores < 0, scores * penalty, scores / penalty), scores)


def banned_ngrams(history: jax.Array, length: jax.Array, n: int, vocab: int) -> jax.Array:
    """[N, V] True for tokens that would repeat an n-gram of history[:, :length].

    Vectorised over every window start instead of HF's per-row dictionaries: window j bans its
    last token when its first n-1 tokens equal the current (n-1)-token suffix.
    """
    rows, width = history.shape
    starts = width - n + 1
    if starts <= 0:
        return jnp.zeros((rows, vocab), jnp.bool_)
    windows = [history[:, k : k + starts] for k in range(n)]
    suffix = jax.lax.dynamic_slice_in_dim(history, length - (n - 1), n - 1, axis=1)
    match = jnp.broadcast_to(jnp.arange(starts) <= length - n, (rows, starts))
    for k in range(n - 1):
        match = match & (windows[k] == suffix[:, k : k + 1])
    banned = jnp.where(match, windows[-1], vocab)
    return _token_mask(banned, vocab)


def _token_mask(ids: jax.Array, vocab: int) -> jax.Array:
    """[N, V] True at each id of ids [N, L]; ids outside [0, V) are ignored."""
    ids = jnp.where((ids >= 0) & (ids < vocab), ids, vocab)
    rows = jnp.arange(ids.shape[0])[:, None]
    return jnp.zeros((ids.shape[0], vocab + 1), jnp.bool_).at[rows, ids].set(True)[:, :vocab]


def warp(
    scores: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_tokens_to_keep: int = 1,
) -> jax.Array:
    """HF's sampling warpers in HF's order: temperature, top-k, top-p (removed -> -inf)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k != 0:
        k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
        kth = jax.lax.top_k(scores, k)[0][..., -1:]
        scores = jnp.where(scores < kth, -jnp.inf, scores)
    if top_p < 1.0:
        order = jnp.argsort(scores, axis=-1)  # ascending, as HF
        ascending = jnp.take_along_axis(scores, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
        remove = cumulative <= 1 - top_p
        remove = remove.at[..., -min_tokens_to_keep:].set(False)
        rows = jnp.arange(scores.shape[0])[:, None]
        remove = jnp.zeros_like(remove).at[rows, order].set(remove)
        scores = jnp.where(remove, -jnp.inf, scores)
    return scores


class _Prompt(NamedTuple):
    """What every step needs to know about the prompt (rows already expanded for beams)."""

    key_mask: jax.Array  # [N, T + max_new] real slots of the KV cache
    n_real: jax.Array  # [N] real prompt tokens: the next position is n_real + generated
    length: int  # T, the padded prompt length (cache slots before generation)
    id_length: int  # prompt ids in the history: T for a token prompt, 0 for embeddings


def _process(
    scores: jax.Array,
    history: jax.Array,
    seen: jax.Array | None,
    step: jax.Array,
    prompt: _Prompt,
    config: GenerationConfig,
) -> jax.Array:
    """Apply HF's logits processors for generation step `step` (tokens generated so far)."""
    if config.repetition_penalty != 1.0:
        scores = penalise_repeats(scores, seen, config.repetition_penalty)
    if config.no_repeat_ngram_size > 0:
        banned = banned_ngrams(
            history, prompt.id_length + step, config.no_repeat_ngram_size, scores.shape[-1]
        )
        scores = jnp.where(banned, -jnp.inf, scores)
    if config.min_length > 0 and config.eos_token_id is not None:
        eos = jnp.isin(jnp.arange(scores.shape[-1]), jnp.asarray(config.eos_token_id))
        scores = jnp.where(eos & (prompt.length + step < config.min_length), -jnp.inf, scores)
    if config.do_sample:
        scores = warp(
            scores, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p
        )
    return scores


def _is_eos(token: jax.Array, config: GenerationConfig) -> jax.Array:
    if config.eos_token_id is None:
        return jnp.zeros(token.shape, jnp.bool_)
    return jnp.isin(token, jnp.asarray(config.eos_token_id))


# ---------------------------------------------------------------------------------------------
# The compiled program


@functools.partial(jax.jit, static_argnames=("config",))
def _generate(
    model: DecoderLM,
    tokens: jax.Array | None,
    embeddings: jax.Array | None,
    mask: jax.Array,
    rng: jax.Array | None,
    *,
    config: GenerationConfig,
) -> tuple[jax.Array, jax.Array]:
    """(new tokens [B, max_new], number of valid columns)."""
    # Dropout (LoRA's) off; `model` is this trace's own copy, so the caller's stays as it was.
    model = nnx.view(model, deterministic=True, raise_if_not_found=False)
    batch, length = mask.shape
    key_mask = jnp.concatenate([mask, jnp.ones((batch, config.max_new_tokens), jnp.bool_)], axis=1)
    cache = model.init_cache(batch, length + config.max_new_tokens)
    hidden, cache = model.hidden_states(
        tokens,
        embeddings=embeddings,
        attention_mask=key_mask,
        positions=positions_from_mask(mask),
        cache=cache,
        cache_index=0,
    )
    logits = model.logits(hidden[:, -1])
    prompt_ids = tokens if tokens is not None else jnp.zeros((batch, 0), jnp.int32)
    penalised = jnp.where(mask, tokens, -1) if tokens is not None else prompt_ids  # not the padding
    seen = _token_mask(penalised, logits.shape[-1]) if config.repetition_penalty != 1.0 else None
    prompt = _Prompt(key_mask, mask.sum(-1), length, prompt_ids.shape[1])
    if config.num_beams > 1:
        return _beam_search(model, logits, cache, prompt_ids, seen, prompt, config)
    return _greedy_or_sample(model, logits, cache, prompt_ids, seen, prompt, rng, config)


def _decode(
    model: DecoderLM, cache: KVCache, token: jax.Array, step: jax.Array, prompt: _Prompt
) -> tuple[jax.Array, KVCache]:
    """Logits [N, V] after feeding `token` [N], the one generated at step - 1."""
    hidden, cache = model.hidden_states(
        token[:, None],
        attention_mask=prompt.key_mask,
        positions=(prompt.n_real + step - 1)[:, None],
        cache=cache,
        cache_index=prompt.length + step - 1,
    )
    return model.logits(hidden[:, 0]), cache


def _with_history(prompt_ids: jax.Array, fill: int, config: GenerationConfig) -> jax.Array:
    """Prompt ids followed by max_new_tokens `fill` slots: what HF's processors call input_ids."""
    rows = prompt_ids.shape[0]
    return jnp.concatenate(
        [prompt_ids, jnp.full((rows, config.max_new_tokens), fill, jnp.int32)], 1
    )


def _mark_seen(seen: jax.Array | None, token: jax.Array) -> jax.Array | None:
    """Add this step's token [N] to the repetition-penalty set [N, V] (a compare, not a scatter)."""
    return None if seen is None else seen | (token[:, None] == jnp.arange(seen.shape[1]))


class _Greedy(NamedTuple):
    step: jax.Array  # tokens generated so far
    history: jax.Array  # [B, id_length + max_new] prompt ids then generated ids
    seen: jax.Array | None  # [B, V] ids the repetition penalty applies to
    unfinished: jax.Array  # [B]
    cache: KVCache


def _greedy_or_sample(
    model: DecoderLM,
    logits: jax.Array,
    cache: KVCache,
    prompt_ids: jax.Array,
    seen: jax.Array | None,
    prompt: _Prompt,
    rng: jax.Array | None,
    config: GenerationConfig,
) -> tuple[jax.Array, jax.Array]:
    """HF's `_sample`: argmax or categorical per step; finished rows emit the pad id."""

    def choose(state: _Greedy, logits: jax.Array) -> _Greedy:
        scores = _process(logits, state.history, state.seen, state.step, prompt, config)
        if config.do_sample:
            token = jax.random.categorical(jax.random.fold_in(rng, state.step), scores, axis=-1)
        else:
            token = jnp.argmax(scores, axis=-1)
        token = jnp.where(state.unfinished, token, config.fill_token).astype(jnp.int32)
        history = jax.lax.dynamic_update_slice_in_dim(
            state.history, token[:, None], prompt.id_length + state.step, axis=1
        )
        return _Greedy(
            state.step + 1,
            history,
            _mark_seen(state.seen, token),
            state.unfinished & ~_is_eos(token, config),
            state.cache,
        )

    def body(state: _Greedy) -> _Greedy:
        last = jax.lax.dynamic_index_in_dim(
            state.history, prompt.id_length + state.step - 1, 1, keepdims=False
        )
        logits, cache = _decode(model, state.cache, last, state.step, prompt)
        return choose(state._replace(cache=cache), logits)

    def running(state: _Greedy) -> jax.Array:
        return (state.step < config.max_new_tokens) & jnp.any(state.unfinished)

    batch = logits.shape[0]
    start = _Greedy(
        jnp.int32(0),
        _with_history(prompt_ids, config.fill_token, config),
        seen,
        jnp.ones((batch,), jnp.bool_),
        cache,
    )
    final = jax.lax.while_loop(running, body, choose(start, logits))
    return final.history[:, prompt.id_length :], final.step


class _Beams(NamedTuple):
    step: jax.Array  # tokens generated so far
    running: jax.Array  # [B, K, L] live hypotheses (prompt ids + generated)
    running_scores: jax.Array  # [B, K] summed log-probs
    finished: jax.Array  # [B, K, L] best finished hypotheses, best first
    finished_scores: jax.Array  # [B, K] length-normalised scores
    finished_lengths: jax.Array  # [B, K] generated tokens of each finished hypothesis
    is_finished: jax.Array  # [B, K] slot holds a real finished hypothesis
    improvable: jax.Array  # [B, 1] HF's is_early_stop_heuristic_unsatisfied
    all_hit: jax.Array  # every candidate of the last step hit a stopping criterion
    parents: jax.Array  # [B, K] the beam (of the same B) each running beam continues
    seen: jax.Array | None  # [B*K, V] ids the repetition penalty applies to
    cache: KVCache


def _beam_search(
    model: DecoderLM,
    logits: jax.Array,
    cache: KVCache,
    prompt_ids: jax.Array,
    seen: jax.Array | None,
    prompt: _Prompt,
    config: GenerationConfig,
) -> tuple[jax.Array, jax.Array]:
    """HF's vectorised `_beam_search` (num_return_sequences=1)."""
    batch, vocab = logits.shape
    beams = config.num_beams
    n_eos = 0 if config.eos_token_id is None else len(config.eos_token_id)
    keep = max(2, 1 + n_eos) * beams
    # HF divides float32 scores by a Python float (length ** penalty): precompute those divisors.
    divisor = jnp.asarray(
        [float(n) ** config.length_penalty for n in range(1, config.max_new_tokens + 1)],
        jnp.float32,
    )
    prompt = prompt._replace(
        key_mask=jnp.repeat(prompt.key_mask, beams, 0), n_real=jnp.repeat(prompt.n_real, beams, 0)
    )
    offset = prompt.id_length

    def choose(state: _Beams, logits: jax.Array) -> _Beams:
        step = state.step
        log_probs = _process(
            jax.nn.log_softmax(logits, axis=-1),
            state.running.reshape(batch * beams, -1),
            state.seen,
            step,
            prompt,
            config,
        )
        scores = log_probs.reshape(batch, beams, vocab) + state.running_scores[..., None]
        top_scores, top_index = jax.lax.top_k(scores.reshape(batch, -1), keep)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = jnp.take_along_axis(state.running, parent[..., None], axis=1)
        candidates = jax.lax.dynamic_update_slice_in_dim(
            candidates, token[..., None], offset + step, 2
        )
        hits = _is_eos(token, config) | (step + 1 >= config.max_new_tokens)

        # live beams for the next step: the best candidates that did not stop
        live_scores = top_scores + hits.astype(jnp.float32) * NEG
        order = jax.lax.top_k(live_scores, beams)[1]
        running = jnp.take_along_axis(candidates, order[..., None], axis=1)
        running_scores = jnp.take_along_axis(live_scores, order, axis=1)
        parents = jnp.take_along_axis(parent, order, axis=1)
        seen = (
            None
            if state.seen is None
            else _mark_seen(
                take_beams(state.seen, parents), running[:, :, offset + step].reshape(-1)
            )
        )

        state = _merge_finished(
            state, candidates, top_scores / divisor[step], hits & (jnp.arange(keep) < beams), config
        )
        return state._replace(
            step=step + 1,
            running=running,
            running_scores=running_scores,
            improvable=_still_improvable(state, running_scores, step + 1, divisor, config),
            all_hit=jnp.all(hits),
            parents=parents,
            seen=seen,
        )

    def body(state: _Beams) -> _Beams:
        last = jax.lax.dynamic_index_in_dim(
            state.running, offset + state.step - 1, 2, keepdims=False
        )
        cache = state.cache.map(lambda rows: take_beams(rows, state.parents))
        logits, cache = _decode(model, cache, last.reshape(-1), state.step, prompt)
        return choose(state._replace(cache=cache), logits)

    def running(state: _Beams) -> jax.Array:
        all_done = jnp.all(state.is_finished) & (config.early_stopping is True)
        return jnp.any(state.improvable) & ~all_done & ~state.all_hit

    def beam_copies(rows: jax.Array) -> jax.Array:  # [B, ...] -> [B*K, ...], in place on each shard
        return jnp.repeat(rows, beams, axis=0)

    history = jnp.repeat(
        _with_history(prompt_ids, config.beam_fill_token, config)[:, None], beams, 1
    )
    start = _Beams(
        step=jnp.int32(0),
        running=history,
        running_scores=jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(NEG),
        finished=history,
        finished_scores=jnp.full((batch, beams), NEG, jnp.float32),
        finished_lengths=jnp.zeros((batch, beams), jnp.int32),
        is_finished=jnp.zeros((batch, beams), jnp.bool_),
        improvable=jnp.ones((batch, 1), jnp.bool_),
        all_hit=jnp.bool_(False),
        parents=jnp.zeros((batch, beams), jnp.int32),
        seen=None if seen is None else beam_copies(seen),
        cache=cache.map(beam_copies),
    )
    final = jax.lax.while_loop(running, body, choose(start, beam_copies(logits)))
    return final.finished[:, 0, offset:], jnp.max(final.finished_lengths[:, 0])


def _merge_finished(
    state: _Beams,
    candidates: jax.Array,
    normalised: jax.Array,
    stopped: jax.Array,
    config: GenerationConfig,
) -> _Beams:
    """HF's `_update_finished_beams`: keep the best `num_beams` of the finished hypotheses and
    the candidates that just stopped among the top `num_beams` (scores already length-normalised).

    The -1e9 offsets are added one by one, as HF does, so float32 rounding ties break alike.
    """
    if config.early_stopping is True:
        normalised = (
            normalised + jnp.all(state.is_finished, -1, keepdims=True).astype(jnp.float32) * NEG
        )
    normalised = normalised + (~state.improvable).astype(jnp.float32) * NEG
    normalised = normalised + (~stopped).astype(jnp.float32) * NEG
    scores = jnp.concatenate([state.finished_scores, normalised], axis=1)
    pick = jax.lax.top_k(scores, config.num_beams)[1]

    def take(old: jax.Array, new: jax.Array) -> jax.Array:
        index = pick.reshape(pick.shape + (1,) * (old.ndim - 2))
        return jnp.take_along_axis(jnp.concatenate([old, new], axis=1), index, axis=1)

    length = jnp.full(stopped.shape, state.step + 1, jnp.int32)
    return state._replace(
        finished=take(state.finished, candidates),
        finished_scores=jnp.take_along_axis(scores, pick, axis=1),
        finished_lengths=take(state.finished_lengths, length),
        is_finished=take(state.is_finished, stopped),
    )


def _still_improvable(
    state: _Beams,
    running_scores: jax.Array,
    length: jax.Array,
    divisor: jax.Array,
    config: GenerationConfig,
) -> jax.Array:
    """HF's `_check_early_stop_heuristic` at generated length `length`: can the best running
    beam still beat the worst finished one? ("never" with a positive penalty assumes it could
    grow to max_new_tokens.)"""
    if config.early_stopping == "never" and config.length_penalty > 0:
        length = config.max_new_tokens
    bound = running_scores[:, :1] / divisor[length - 1]
    worst = jnp.where(state.is_finished, jnp.min(state.finished_scores, 1, keepdims=True), NEG)
    return state.improvable & jnp.any(bound > worst, -1, keepdims=True)
