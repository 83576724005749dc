"""bench step-profile's CPU-side parts: kernel names, the decode-only rows, option checks."""

import argparse

import pytest

from fastattention.bench import step_profile


def test_short_name_drops_templates_and_parameters():
    name = (
        "void fastattn::kernels::cuda::decode::decode_split_kernel<fastattn::DecodeTraits<__half, "
        "128, 16>>(fastattn::DecodeDeviceParams)"
    )
    assert step_profile.short_name(name) == "decode_split_kernel"
    assert (
        step_profile.short_name("nvjet_hsh_64x8_64x16_4x1_v_bz_splitK_TNN")
        == "nvjet_hsh_64x8_64x16_4x1_v_bz_splitK_TNN"
    )


def test_step_rows_subtract_the_prefill_only_call():
    timed = {"gemv": (1000.0, 40), "fmha_prefill": (300.0, 4), "decode": (320.0, 32)}
    prefill = {"gemv": (40.0, 8), "fmha_prefill": (300.0, 4)}
    rows = step_profile.step_rows(timed, prefill, steps=32)
    assert [r[0] for r in rows] == ["gemv", "decode"]  # the prefill kernel is gone, by time
    kernel, per_call, calls, per_step = rows[0]
    assert (
        per_call == pytest.approx(960.0 / 32) and calls == 1.0 and per_step == pytest.approx(30.0)
    )


@pytest.mark.parametrize(
    "opts, what",
    [(dict(layers=0), "--layers"), (dict(layers=33), "--layers"), (dict(steps=0), "--steps")],
)
def test_bad_options_name_the_option(opts, what):
    args = dict(layers=8, prompt_len=128, steps=32, top=16)
    args.update(opts)
    with pytest.raises(ValueError, match=what):
        step_profile.check_arguments(argparse.Namespace(**args))


@pytest.mark.parametrize("value", ["1,x", "0"])
def test_bad_batches_name_the_option(value, capsys):
    parser = argparse.ArgumentParser()
    step_profile.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--batches", value])
    assert "argument --batches: expected" in capsys.readouterr().err
