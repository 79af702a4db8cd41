"""Tiny Sensorium 2022 / neuralpredictors file trees in the published layout, for reader and CLI tests."""

import io
import zipfile

import numpy as np

PREFIX = "static12345-1-2-GrayImageNet-94c6ff995dac583098847cfecd43e7b6"
K = 5


def tree(n_trials=12, tiers=None, zero_test=False, image_dtype=np.uint8, seed=0):
    """{relative path: array} of a tiny file tree; trials 8.. are repeats of two test images."""
    rng = np.random.default_rng(seed)
    frame_id = np.array([10, 11, 12, 13, 14, 15, 16, 17, 90, 91, 90, 91])[:n_trials]
    base = {i: rng.integers(0, 256, (1, 8, 16)).astype(image_dtype) for i in np.unique(frame_id)}
    if tiers is None:
        tiers = np.array(["train"] * 6 + ["validation"] * 2 + ["test"] * 2 + ["final_test"] * 2)[:n_trials]
    responses = rng.gamma(2.0, 1.0, (n_trials, K)).astype(np.float32)
    if zero_test:
        responses[np.isin(tiers, ["test", "final_test"])] = 0.0
    files = {}
    for i in range(n_trials):
        files[f"data/images/{i}.npy"] = base[frame_id[i]]
        files[f"data/responses/{i}.npy"] = responses[i]
        files[f"data/behavior/{i}.npy"] = rng.normal(size=(1, 3))
        files[f"data/pupil_center/{i}.npy"] = rng.normal(size=2)
    files["meta/trials/tiers.npy"] = np.asarray(tiers)  # unicode strings
    files["meta/trials/frame_image_id.npy"] = frame_id
    files["meta/trials/trial_idx.npy"] = rng.permutation(n_trials)
    files["meta/neurons/unit_ids.npy"] = np.arange(1, K + 1)
    files["meta/neurons/area.npy"] = np.array(["V1"] * K)
    files["meta/neurons/layer.npy"] = np.array(["L2/3"] * K)
    files["meta/neurons/cell_motor_coordinates.npy"] = rng.normal(size=(K, 3))
    files["meta/statistics/responses/all/std.npy"] = responses.std(0)
    return files, responses, frame_id, np.asarray(tiers), base


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{PREFIX}/", b"")
        for rel, a in files.items():
            zf.writestr(f"{PREFIX}/{rel}", npy_bytes(a))
    return path


def write_folder(root, files):
    for rel, a in files.items():
        p = root / PREFIX / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, a)
    return root
