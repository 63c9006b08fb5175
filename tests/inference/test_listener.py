"""The listening API splits every batch over all of this process's devices, padding a batch that
does not divide: four devices give one device's CLAP embeddings and texts (Santa on). Generated
texts are cleaned up as the original's are (`postprocess`): expected strings worked out by hand
from the original's steps (capitalize, strip, unidecode, comma spacing, runs of spaces)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mats_jax.inference.listener import Listener, postprocess
from tests.support.paths import ESC50, ROOT, shared

LISTEN = """
import json, sys
from mats_jax.inference.listener import Listener, postprocess
listener = Listener.from_workdir(sys.argv[1])
embeddings, files, errors = listener.embed_audio(json.loads(sys.argv[2]), batch_size=3)
texts = listener.describe(embeddings, generation=listener.paper_generation(max_new_tokens=6))
print(json.dumps({"devices": listener.mesh.shape["data"], "embeddings": embeddings.tolist(),
                  "texts": texts}))
"""


@pytest.mark.slow
def test_four_devices_listen_like_one(listening_workdir):
    clips = [str(p) for p in sorted(shared(ESC50).glob("*.wav"))[:3]]
    listener = Listener.from_workdir(listening_workdir)
    assert listener.bank is not None and listener.mesh.shape["data"] == 1
    embeddings, files, errors = listener.embed_audio(clips, batch_size=3)
    assert files == clips and not errors
    texts = listener.describe(embeddings, generation=listener.paper_generation(max_new_tokens=6))

    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", LISTEN, str(listening_workdir), json.dumps(clips)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    four = json.loads(out.stdout.strip().splitlines()[-1])
    assert four["devices"] == 4
    np.testing.assert_allclose(np.asarray(four["embeddings"]), embeddings, atol=1e-5)
    assert four["texts"] == texts and len(texts) == 3


@pytest.mark.parametrize(
    "generated, expected",
    [
        # ", " after each comma, none before, every run of spaces one space, stripped
        (
            "a dog barks ,then a car passes,and birds sing  ",
            "A dog barks, then a car passes, and birds sing",
        ),
        ("a man speaks , , then", "A man speaks,, then"),
        # capitalize(): everything after the first character lower-cased
        ("A Man Speaks While a DOG barks", "A man speaks while a dog barks"),
        # capitalize() before strip(): a leading space keeps the first letter small
        (" a dog barks", "a dog barks"),
        # U+FFFD (a cut UTF-8 sequence) is dropped, not written as "?"
        ("a bird chirps \ufffd\ufffd and a car passes", "A bird chirps and a car passes"),
        ("café — wind  blows", "Cafe -- wind blows"),
        ("ÆTHER sounds", "AEther sounds"),  # capitalize keeps Æ capital: unidecode's "AE"
        ("straße noise", "Strasse noise"),
        ("i hear “rain” – then ½ a minute…", 'I hear "rain" - then 1/2 a minute...'),
        # transliterated after capitalize(): "PS" stays capital
        ("a price of £5 × 2 · done", "A price of PS5 x 2 * done"),
        # only spaces collapse: a tab stays
        ("Music plays,\tthen stops", "Music plays, \tthen stops"),
        ("   ", ""),
    ],
)
def test_generated_texts_are_cleaned_up_as_the_originals(generated, expected):
    assert postprocess(generated) == expected
