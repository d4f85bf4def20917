"""NAB scoring arithmetic on hand-made windows, against the constants of SCORING.md."""

import csv
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpool.telemetry.nab_scoring import (
    MAX_TP,
    PROFILES,
    normalise,
    optimise_threshold,
    probation_rows,
    raw_file_score,
    row_values,
    scaled_sigmoid,
    score_corpus,
    window_rows,
)

STD = PROFILES["standard"]
LOW_FN = PROFILES["reward_low_FN_rate"]
LOW_FP = PROFILES["reward_low_FP_rate"]


def detections(n, rows):
    scores = [0.0] * n
    for i in rows:
        scores[i] = 1.0
    return scores


def test_scaled_sigmoid_matches_the_published_constants():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.986614, abs=1e-6)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.848284, abs=1e-6)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.986614, abs=1e-6)
    assert scaled_sigmoid(3.0001) == -1.0
    assert MAX_TP == pytest.approx(0.98661429815, abs=1e-10)


def test_profiles_are_nabs_constants():
    assert (STD.tp, STD.fp, STD.fn) == (1.0, 0.11, 1.0)
    assert (LOW_FP.tp, LOW_FP.fp, LOW_FP.fn) == (1.0, 0.22, 1.0)
    assert (LOW_FN.tp, LOW_FN.fp, LOW_FN.fn) == (1.0, 0.11, 2.0)


@pytest.mark.parametrize("n, expected", [(100, 15), (1127, 169), (4032, 604), (5000, 750), (22695, 750)])
def test_probation_is_fifteen_percent_capped_at_750(n, expected):
    assert probation_rows(n) == expected


def test_window_rows_are_inclusive_and_cover_repeated_edge_timestamps():
    ts = ["2024-01-01 00:00:00", "2024-01-01 00:05:00", "2024-01-01 00:05:00", "2024-01-01 00:10:00",
          "2024-01-01 00:10:00", "2024-01-01 00:15:00"]
    windows = [["2024-01-01 00:05:00.000000", "2024-01-01 00:10:00.000000"]]
    assert window_rows(ts, windows) == [(1, 4)]


def test_first_row_of_a_window_is_worth_exactly_a_tp():
    # n=100 -> probation 15; one window of width 10 at rows 50..59.
    assert raw_file_score(detections(100, [50]), [(50, 59)], STD, 0.5) == pytest.approx(1.0)


def test_last_row_of_a_window_is_worth_almost_nothing():
    expected = scaled_sigmoid(-1 / 10) / MAX_TP
    assert raw_file_score(detections(100, [59]), [(50, 59)], STD, 0.5) == pytest.approx(expected)
    assert 0 < expected < 2.5 / 10


def test_only_the_earliest_detection_in_a_window_counts():
    one = raw_file_score(detections(100, [52]), [(50, 59)], STD, 0.5)
    many = raw_file_score(detections(100, [52, 53, 57, 59]), [(50, 59)], STD, 0.5)
    assert many == pytest.approx(one)
    assert one == pytest.approx(scaled_sigmoid(-(59 - 52 + 1) / 10) / MAX_TP)


def test_missed_window_costs_a_fn_weight():
    assert raw_file_score([0.0] * 100, [(50, 59)], STD, 0.5) == -1.0
    assert raw_file_score([0.0] * 100, [(50, 59)], LOW_FN, 0.5) == -2.0


def test_false_positive_before_any_window_costs_the_full_fp_weight():
    # The miss (-1) plus a full-weight FP at row 20.
    assert raw_file_score(detections(100, [20]), [(50, 59)], STD, 0.5) == pytest.approx(-1.0 - 0.11)
    assert raw_file_score(detections(100, [20]), [(50, 59)], LOW_FP, 0.5) == pytest.approx(-1.0 - 0.22)


def test_false_positive_right_after_a_window_is_discounted_with_width_minus_one():
    got = raw_file_score(detections(100, [50, 60]), [(50, 59)], STD, 0.5)
    u = 2 / (1 + math.exp(5 * (1 / 9))) - 1  # S((60 - 59) / (10 - 1))
    assert got == pytest.approx(1.0 + 0.11 * u)
    assert -0.11 < 0.11 * u < 0


def test_false_positive_three_widths_after_a_window_costs_the_full_weight():
    got = raw_file_score(detections(100, [50, 95]), [(50, 59)], STD, 0.5)
    assert got == pytest.approx(1.0 - 0.11)


def test_false_positive_is_measured_from_the_preceding_window_only():
    windows = [(20, 29), (70, 79)]
    values, owner = row_values(100, windows, STD)
    # Row 65 lies just before the second window: measured from the first, (65-29)/9 = 4 > 3.
    assert values[65] == pytest.approx(-0.11)
    assert owner[65] == -1 and owner[70] == 1 and owner[29] == 0
    assert values[31] == pytest.approx(0.11 * scaled_sigmoid(2 / 9))


def test_probation_rows_are_not_detections_and_windows_inside_probation_are_not_scored():
    # n=100 -> probation 15: the window 5..9 and the detection at row 3 are both ignored.
    assert raw_file_score(detections(100, [3, 7]), [(5, 9)], STD, 0.5) == 0.0


def test_ties_at_the_threshold_are_detections():
    scores = [0.0] * 100
    scores[50] = 0.7
    assert raw_file_score(scores, [(50, 59)], STD, 0.7) == pytest.approx(1.0)
    assert raw_file_score(scores, [(50, 59)], STD, 0.70001) == -1.0


def test_htm_worked_check_normalises_to_the_scoreboard():
    assert normalise(46.6345, STD, 116) == pytest.approx(70.10, abs=0.005)
    assert normalise(26.6345, LOW_FN, 116) == pytest.approx(74.32, abs=0.005)


def test_perfect_detector_scores_100_and_null_scores_0():
    files = {
        "a": (detections(200, [100, 150]), [(100, 119), (150, 169)]),
        "b": (detections(100, []), []),
        "c": (detections(300, [60]), [(60, 89)]),
    }
    null = {name: ([0.0] * len(s), w) for name, (s, w) in files.items()}
    for profile in PROFILES.values():
        assert score_corpus(files, profile, 3).normalised == pytest.approx(100.0)
        assert score_corpus(null, profile, 3).normalised == pytest.approx(0.0)
        assert score_corpus(null, profile, 3).threshold == 1.1


def test_sweep_prefers_a_threshold_that_drops_costly_false_positives():
    # Row 50 (window start) scores 0.6; twenty FPs score 0.8: detecting the window would
    # cost 20 * 0.11 = 2.2 > the 2.0 gained, so the best is to detect nothing.
    scores = [0.0] * 200
    scores[50] = 0.6
    for i in range(100, 120):
        scores[i] = 0.8
    threshold, raw = optimise_threshold({"f": (scores, [(50, 59)])}, STD)
    assert threshold == 1.1 and raw == -1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), min_size=60, max_size=60),
    st.lists(st.sampled_from([0.0, 0.3, 0.5, 0.8]), min_size=80, max_size=80),
    st.sampled_from(list(PROFILES.values())),
)
def test_sweep_equals_brute_force_over_every_candidate_threshold(a, b, profile):
    files = {"a": (a, [(20, 29), (45, 50)]), "b": (b, [(30, 39)])}
    candidates = {1.1} | {s for scores, _ in files.values() for s in scores[probation_rows(len(scores)):]}
    brute = max(sum(raw_file_score(s, w, profile, t) for s, w in files.values()) for t in candidates)
    threshold, raw = optimise_threshold(files, profile)
    assert raw == pytest.approx(brute)
    assert sum(raw_file_score(s, w, profile, threshold) for s, w in files.values()) == pytest.approx(raw)


def _nab_benchmark():
    import importlib.util
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).parents[2] / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)  # as when run as a script: its peers sit beside it
    spec = importlib.util.spec_from_file_location("nab_benchmark", Path(benchmarks) / "nab.py")
    nab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nab)
    return nab


def _step_file(data, folder="artificialWithAnomaly"):
    """One labelled 600-row file with a step at row 450, as NAB lays it out under DATA."""

    (data / folder).mkdir(parents=True)
    stamps = [f"2024-01-{1 + i // 288:02d} {(i % 288) * 5 // 60:02d}:{(i % 288) * 5 % 60:02d}:00" for i in range(600)]
    with (data / folder / "step.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i, ts in enumerate(stamps):
            w.writerow([ts, 10.0 + (i % 3) + (40.0 if i >= 450 else 0.0)])
    return {f"{folder}/step.csv": [[stamps[420] + ".000000", stamps[479] + ".000000"]]}


def test_benchmark_script_writes_nab_layout_and_scores_the_references(tmp_path, capsys):
    nab = _nab_benchmark()
    data = tmp_path / "data"
    labels = _step_file(data)
    (data / "labels").mkdir()
    (data / "labels" / "combined_windows.json").write_text(json.dumps(labels))

    assert nab.main(["--data", str(data), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["windows"] == 1
    for profile in PROFILES:
        assert report["detectors"]["perfect"][profile]["score"] == 100.0
        assert report["detectors"]["null"][profile]["score"] == 0.0
        assert report["detectors"]["vpool"][profile]["score"] > 50.0
    margins = report["detectors"]["vpool"]["minus_peer_standard"]
    for peer in ("ARTime", "contextOSE", "windowedGaussian"):
        assert margins[peer]["in_sample"] == pytest.approx(
            report["detectors"]["vpool"]["standard"]["score"] - report["detectors"][peer]["standard"]["score"], abs=0.01)
    assert report["published_full_corpus_standard"]["ARTime"] == 74.85
    with (tmp_path / "out" / "vpool" / "artificialWithAnomaly" / "vpool_step.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["timestamp", "value", "anomaly_score", "label"]
    assert sum(int(r["label"]) for r in rows) == 60
    raw = report["detectors"]["vpool"]["standard"]["raw"]
    assert sum(float(r["S(t)_standard"]) for r in rows) == pytest.approx(raw, abs=1e-4)
    assert (tmp_path / "out" / "vpool" / "vpool_standard_scores.csv").exists()


def test_benchmark_script_takes_nab_repository_layout_and_refuses_a_corpus_it_cannot_find(tmp_path, capsys):
    """NAB's own repository keeps labels/ beside data/: its root and its data/ folder both work;
    files the labels name but the folder lacks are named, and a corpus with none is refused."""
    nab = _nab_benchmark()
    repo = tmp_path / "NAB"
    labels = _step_file(repo / "data")
    labels["realTweets/Twitter_volume_XYZ.csv"] = []
    (repo / "labels").mkdir()
    (repo / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    for given_dir in (repo, repo / "data"):
        corpus = nab.load_corpus(given_dir)
        assert [item["name"] for item in corpus] == ["artificialWithAnomaly/step.csv"]
        assert "1 of the 2 labelled files are not under" in capsys.readouterr().err
    (repo / "labels" / "combined_windows.json").write_text(json.dumps({"realTweets/Twitter_volume_XYZ.csv": []}))
    with pytest.raises(SystemExit, match="none of the 1 files the labels name"):
        nab.load_corpus(repo)
    with pytest.raises(SystemExit, match="not a NAB-layout folder"):
        nab.load_corpus(tmp_path / "nowhere")


# NAB's published results/<detector>/<detector>_standard_scores.csv (the runs behind the
# published full-corpus scores): peer, file, raw standard score at that peer's threshold, TP, FP.
PUBLISHED_THRESHOLD = {"contextOSE": 0.70478515625, "ARTime": 0.317486}
PUBLISHED_FILES = [
    ("contextOSE", "realTraffic/speed_7578.csv", 3.14471238767, 4, 5),
    ("contextOSE", "realTraffic/TravelTime_451.csv", 0.86142179597, 1, 0),
    ("contextOSE", "realTraffic/occupancy_6005.csv", 0.421408660324, 1, 4),
    ("ARTime", "realTraffic/speed_7578.csv", 3.1077313980278403, 7, 4),
    ("ARTime", "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv", -0.3338123387023829, 3, 9),
    ("ARTime", "artificialWithAnomaly/art_daily_nojump.csv", -1.11, 0, 1),
]


@pytest.mark.parametrize("peer,name,raw,tp,fp", PUBLISHED_FILES)
def test_the_restated_peers_reproduce_nabs_published_results(peer, name, raw, tp, fp):
    """A peer whose published full-corpus score anchors vpool's estimate must be the detector
    that earned it: same raw score, same detections, at NAB's own threshold for it."""
    from tests.shared import SHARED

    path = SHARED / "nab" / "data" / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    nab = _nab_benchmark()
    labels = json.loads((SHARED / "nab" / "data" / "labels" / "combined_windows.json").read_text())
    with path.open() as fh:
        rows = list(csv.reader(fh))[1:]
    values = [float(r[1]) for r in rows]
    windows = window_rows([r[0] for r in rows], labels[name])
    scores = nab.DETECTORS[peer]([], values, probation_rows(len(values)))
    threshold = PUBLISHED_THRESHOLD[peer]
    assert raw_file_score(scores, windows, PROFILES["standard"], threshold) == pytest.approx(raw, abs=1e-9)
    detected = [i for i in range(probation_rows(len(values)), len(values)) if scores[i] >= threshold]
    inside = [i for i in detected if any(left <= i <= right for left, right in windows)]
    assert (len(inside), len(detected) - len(inside)) == (tp, fp)


def test_the_long_series_corpus_is_a_nab_corpus_whose_windows_lie_apart_and_after_probation(tmp_path):
    """benchmarks/long_series.py writes what benchmarks/nab.py reads: every kind once per seed,
    the same files for the same seed, and windows that neither overlap nor start in probation,
    so a perfect detector scores 100 on it as on NAB."""
    nab = _nab_benchmark()
    import long_series  # beside nab.py, on the path _nab_benchmark set

    labels = long_series.write_corpus(tmp_path / "a", [7])
    long_series.write_corpus(tmp_path / "b", [7])
    assert sorted(labels) == sorted(f"long{k.capitalize()}/{k}_7.csv" for k in long_series.KINDS)
    for name in labels:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    corpus = nab.load_corpus(tmp_path / "a")
    for item in corpus:
        windows = item["windows"]
        assert windows and windows[0][0] >= probation_rows(len(item["values"]))
        assert all(right < left for (_, right), (left, _) in zip(windows, windows[1:]))
    n_windows = sum(len(item["windows"]) for item in corpus)
    perfect = {item["name"]: nab.perfect_scores(item) for item in corpus}
    assert nab.evaluate(corpus, perfect, n_windows)["standard"]["score"] == 100.0


def test_two_data_folders_are_scored_as_one_corpus_and_a_shared_file_name_is_refused(tmp_path, capsys):
    """The subset and a corpus of another kind (long_series.py's) scored together, one
    threshold for all, as the full corpus would be; two folders naming the same file are not
    a corpus."""
    nab = _nab_benchmark()
    for root, folder in (("a", "artificialWithAnomaly"), ("b", "longMachine")):
        data = tmp_path / root
        labels = _step_file(data, folder)
        (data / "labels").mkdir()
        (data / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    out = str(tmp_path / "out")
    args = ["--out", out, "--jobs", "1", "--detectors", "vpool"]
    assert nab.main(["--data", str(tmp_path / "a"), "--data", str(tmp_path / "b"), *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["files"], report["windows"]) == (2, 2)
    with pytest.raises(SystemExit, match="share a file name"):
        nab.main(["--data", str(tmp_path / "a"), "--data", str(tmp_path / "a"), *args])
