"""A micro zoo trained end to end through the real flow, stages and loaders (tiny sizes, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image


@pytest.fixture(scope="module")
def micro_zoo(prefect_harness, tmp_path_factory):
    from flows.zoo import zoo_train

    root = tmp_path_factory.mktemp("zoo")
    result = zoo_train(out=str(root / "models"), work=str(root / "work"), preset="micro", seed=0, evaluate=True)
    return root, result


def test_micro_zoo_publishes_every_model_with_cards_and_figures(micro_zoo):
    root, _ = micro_zoo
    models = root / "models"
    for name in ("reasoner", "reasoner-base", "surrogate-decoder", "teacher"):
        assert (models / name / "README.md").is_file(), name
        assert list((models / name).rglob("*.safetensors")), name
    record = json.loads((models / "zoo.json").read_text())
    assert record["train_seconds_total"] > 0
    assert set(record["eval"]["targets"]) >= {"vae_psnr_ge_30", "reasoner_id_in_0.3_0.7", "teacher_accuracy_ge_0.9"}
    assert 0.0 <= record["eval"]["reasoner"]["score_id"] <= 1.0


def test_shipped_reasoner_generates_from_a_synth_first_frame(micro_zoo):
    from core.bench.source import open_benchmark
    from core.media import read_image

    root, _ = micro_zoo
    bench = open_benchmark(next((root / "work" / "stages").glob("bench-*")) / "bench-test")
    inst = bench.instances[0]
    pipe = WanImageToVideoPipeline.from_pretrained(root / "models" / "reasoner")
    out = pipe(image=Image.fromarray(read_image(inst.first_frame)), prompt=inst.prompt, height=64, width=64,
               num_frames=17, num_inference_steps=4, guidance_scale=1.0, output_type="np").frames[0]
    assert out.shape == (17, 64, 64, 3) and np.isfinite(out).all()


def test_surrogate_loads_without_the_vae(micro_zoo):
    from core.models.surrogate import SurrogateDecoder

    root, _ = micro_zoo
    sur = SurrogateDecoder.from_pretrained(root / "models" / "surrogate-decoder")
    c = sur.config
    z = torch.randn(1, c.z_dim, 1 + 16 // c.scale_factor_temporal, 64 // c.scale_factor_spatial, 64 // c.scale_factor_spatial)
    assert sur(z).shape == (1, 3, 17, 64, 64)


def test_rerun_reuses_every_finished_stage(micro_zoo, tmp_path):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.zoo import zoo_train

    root, first = micro_zoo
    assert list((root / "work" / "prefect-results").iterdir()), "the cache records belong in the work dir"
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "empty-default-storage"}):
        again = zoo_train(out=str(tmp_path / "models"), work=str(root / "work"), preset="micro", seed=0, evaluate=False)
    for stage, rec in first["stages"].items():
        assert again["stages"][stage] == rec, stage  # same key, same path, same recorded seconds: not recomputed
