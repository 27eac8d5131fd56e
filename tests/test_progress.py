"""core.progress: one bar for the terminal and the run's listeners; annotator.status: what the
page shows from those events."""
from core import progress
from annotator.status import RunStatus, duration, progress_markdown


def test_listeners_get_the_bars_progress_and_a_broken_listener_is_dropped(monkeypatch):
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    events, calls = [], []

    def broken(event):
        calls.append(event)
        raise RuntimeError("a broken view")

    progress.subscribe(events.append)
    progress.subscribe(broken)
    try:
        bar = progress.bar(range(3, 7), desc="train", total=7, initial=3, disable=True)
        for i in bar:
            bar.set_postfix({"ce_s": 1.0 / (i + 1)})
        bar.close()
    finally:
        progress.unsubscribe(events.append)
        progress.unsubscribe(broken)
    assert len(calls) == 1                              # dropped after its first failure; training went on
    assert [e["n"] for e in events] == [3, 4, 5, 6, 7, 7]   # start, one per item, closed
    assert events[0]["total"] == 7 and events[0]["initial"] == 3 and not events[0]["closed"]
    assert events[-1]["closed"] and abs(events[-1]["postfix"]["ce_s"] - 1 / 7) < 1e-9


def test_run_status_keeps_one_loss_curve_per_training_step_and_formats_the_step():
    st = RunStatus()
    for n in range(1, 1001):
        st.update({"desc": "source-only warm-up", "n": n, "total": 1000, "initial": 0, "elapsed": n * 0.5,
                   "postfix": {"ce_s": 3.0 - n / 1000 - (n % 10) * 1e-4}, "closed": False})
    frame = st.loss_frame()
    assert 0 < len(frame) <= 400 and frame["iteration"].max() == 1000 and set(frame["term"]) == {"ce_s"}
    assert frame["iteration"].is_monotonic_increasing
    text = progress_markdown(st.snapshot())
    assert "source-only warm-up" in text and "1000/1000" in text and "0.50 s per iteration" in text
    st.update({"desc": "round 1: train", "n": 1, "total": 10, "initial": 0, "elapsed": 1.0,
               "postfix": {"ce_s": 1.0, "ce_t": 2.0}, "closed": False})
    assert set(st.loss_frame()["term"]) == {"ce_s", "ce_t"} and len(st.loss_frame()) == 2   # a new curve
    mid = {"desc": "round 1: score + select", "n": 2, "total": 8, "initial": 0, "elapsed": 4.0, "postfix": {},
           "closed": False}
    st.update(mid)
    assert "item **2/8** (25 %)" in progress_markdown(st.snapshot()) and "ETA 12 s" in progress_markdown(st.snapshot())
    st.update({**mid, "desc": "evaluate (warm-up)"})
    assert "item **2/8**" in progress_markdown(st.snapshot())          # images, not training iterations
    assert duration(3725) == "1 h 02 min" and duration(95) == "1 min 35 s" and duration(None) == "—"
