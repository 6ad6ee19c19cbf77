"""The Triton backend's answer for a segmentation model (an NMS layout with each row's mask
coefficients): the pipeline's selection keeps every detection's own coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from s2trt.detect.boxes import postprocess, to_layout
from s2trt.detect.masks import COEFFICIENTS_OUTPUT, detections
from s2trt.detect.options import DetectOptions
from s2trt.runtime.backends.triton import padded

NM, K = 5, 12


def layout(counts: list[int], seed: int = 0) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """An NMS layout with coefficients, padded to K, and its rows (n, 6 + NM) per image."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in counts:
        xy = rng.uniform(0, 50, (n, 2))
        r = np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2)), np.sort(rng.uniform(0, 1, n))[::-1, None],
                            rng.integers(0, 4, (n, 1)), rng.normal(0, 3, (n, NM))], axis=1)
        rows.append(r.astype(np.float32))
    out = to_layout(rows, K)
    coefficients = np.full((len(counts), K, NM), np.nan, dtype=np.float32)  # padding is never read
    for i, r in enumerate(rows):
        coefficients[i, :len(r)] = r[:, 6:]
    return {**out, COEFFICIENTS_OUTPUT: coefficients}, rows


@pytest.mark.parametrize("options", [DetectOptions(conf_thres=0.0), DetectOptions(conf_thres=0.4),
                                     DetectOptions(conf_thres=0.1, classes=(1, 3), max_det=3),
                                     DetectOptions(conf_thres=0.99)])
def test_selected_rows_keep_their_own_coefficients(options):
    outputs, rows = layout([9, 0, K])
    got = detections(outputs, options)
    for g, r in zip(got, rows, strict=True):
        # Reference, row by row: score above the threshold, class among those asked for, the first max_det.
        keep = [row for row in r if row[4] > options.conf_thres
                and (options.classes is None or int(row[5]) in options.classes)][:options.max_det]
        want = np.array(keep, dtype=np.float32).reshape(-1, 6 + NM)
        np.testing.assert_array_equal(g, want)
    assert sum(len(g) for g in got) > 0 or options.conf_thres > 0.9


def test_without_coefficients_it_is_postprocess():
    outputs, _ = layout([7, 3], seed=1)
    del outputs[COEFFICIENTS_OUTPUT]
    options = DetectOptions(conf_thres=0.3)
    for g, w in zip(detections(outputs, options), postprocess(outputs, options), strict=True):
        np.testing.assert_array_equal(g, w)


def test_padded_coefficients_are_row_for_row_with_the_layout():
    """What the served model and TritonBackend pad the coefficients with: each image's rows in the
    layout's order, cut to K like to_layout's, zeros after them."""
    _, rows = layout([9, 0, K], seed=2)
    k = 10  # pads the first image, cuts the last
    out = to_layout(rows, k)
    got = padded([r[:, 6:] for r in rows], k, NM)
    assert got.shape == (3, k, NM) and got.dtype == np.float32
    for i, r in enumerate(rows):
        n = int(out["num_dets"][i, 0])
        assert n == min(len(r), k)
        np.testing.assert_array_equal(out["det_scores"][i, :n], r[:n, 4])
        np.testing.assert_array_equal(got[i, :n], r[:n, 6:])
        assert not got[i, n:].any()
