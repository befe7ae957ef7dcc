"""Sweep expansion: cartesian product, first axis outermost, stable job keys."""

import pytest

from pano360.client.sweep import (Axis, SweepError, Target, apply, expand, parse_seeds, parse_set, read_prompts,
                                  resolve_target, seed_targets)

API = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 8.0, "model": ["4", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}, "_meta": {"title": "Positive"}},
    "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
}


def test_sweep_is_cartesian_product_with_last_axis_fastest():
    prompts = Axis("p", (Target("6", "text"),), ("x", "y"))
    cfg = parse_set(API, "3.cfg=4,7.5")
    seeds = Axis("s", (Target("3", "seed"),), (10, 11, 12))
    jobs = expand([prompts, cfg, seeds])
    assert len(jobs) == 2 * 2 * 3
    got = [(j.describe()["6.text"], j.describe()["3.cfg"], j.describe()["3.seed"]) for j in jobs]
    assert got == [(p, c, s) for p in ("x", "y") for c in (4, 7.5) for s in (10, 11, 12)]
    assert len({j.key for j in jobs}) == len(jobs)
    assert [j.index for j in jobs] == list(range(12))


def test_no_axes_is_one_job_running_the_workflow_unchanged():
    jobs = expand([])
    assert len(jobs) == 1
    assert apply(API, jobs[0]) == API


def test_job_keys_are_stable_and_independent_of_position():
    a = expand([Axis("s", (Target("3", "seed"),), (1, 2))])
    b = expand([Axis("s", (Target("3", "seed"),), (0, 1, 2))])
    assert a[0].key == b[1].key and a[1].key == b[2].key


def test_apply_sets_every_target_and_leaves_the_original_alone():
    job = expand([Axis("s", seed_targets(API), (42,))])[0]
    out = apply(API, job)
    assert out["3"]["inputs"]["seed"] == 42 and out["9"]["inputs"]["noise_seed"] == 42
    assert API["3"]["inputs"]["seed"] == 1


def test_set_values_parse_json_scalars_strings_and_lists():
    assert parse_set(API, "3.steps=1,2").values == (1, 2)
    assert parse_set(API, "3.cfg=2.5,x y").values == (2.5, "x y")
    assert parse_set(API, '6.text=["a, b", "c"]').values == ("a, b", "c")
    assert parse_set(API, "Positive.text=true").targets == (Target("6", "text"),)


def test_targets_that_do_not_exist_or_are_links_are_refused_by_name():
    with pytest.raises(SweepError, match="no node '7'"):
        resolve_target(API, "7.text")
    with pytest.raises(SweepError, match="has no input 'txt'"):
        resolve_target(API, "6.txt")
    with pytest.raises(SweepError, match="is a link"):
        resolve_target(API, "3.model")


def test_seed_lists_and_ranges():
    assert parse_seeds("1,2,5-7") == (1, 2, 5, 6, 7)
    with pytest.raises(SweepError):
        parse_seeds("3-1")
    with pytest.raises(SweepError):
        parse_seeds("a")


def test_prompt_files_skip_blank_lines_and_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# header\nfirst prompt\n\n  second, with comma  \n")
    assert read_prompts(f) == ("first prompt", "second, with comma")
    g = tmp_path / "p.json"
    g.write_text('["a", "b"]')
    assert read_prompts(g) == ("a", "b")
