"""The incident detector's hot path gives exactly the plain formulas' results (issue 8: faster, same output)."""

from __future__ import annotations

import math
import random
from typing import Any

from models import incidents as inc


def _reference_llr(
    xs: dict[str, Any],
    i: int,
    p: float,
    ci: int,
    N: float,
    armed: bool,
    usable: dict[str, list[Any]],
    dets: dict[int, str],
    idx: list[int],
    limit: float,
    down_lanes: dict[str, str],
) -> dict[str, float]:
    """Per-hypothesis LLRs as written before the hot path was specialised (one dict per lane and step)."""
    llr = {h: 0.0 for h in inc.HYPOTHESES}
    if armed:
        conc = min(inc.SHARE_CONC_MAX, sum(xs["n"][j] for j in idx) + inc.SHARE_PRIOR_VEH)
        a, b = p * conc, (1.0 - p) * conc
        n_int = round(N)
        null = math.lgamma(ci + a) + math.lgamma(n_int - ci + b) - math.lgamma(n_int + a + b)
        null -= math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        for h, rho in inc.HYPOTHESES.items():
            q = rho * p
            llr[h] += ci * math.log(q) + (n_int - ci) * math.log(1.0 - q) - null
    d_det = down_lanes.get(str(i))
    if d_det is not None and d_det in usable and xs["r"][i][1] >= inc.LANE_RATIO_MIN_VEH:
        rr = xs["r"][i]
        ratio = (rr[0] + inc.LANE_RATIO_PRIOR_VEH) / (rr[1] + inc.LANE_RATIO_PRIOR_VEH)
        m_eff = 0.5 * (ci + float(xs["mp"][i]))
        s_cnt = float(usable[d_det][0])
        pi0 = ratio / (1.0 + ratio)
        for h in ("block", "partial"):
            rho = inc.HYPOTHESES[h]
            pi1 = rho * ratio / (1.0 + rho * ratio)
            llr[h] += m_eff * math.log(pi1 / pi0) + s_cnt * math.log((1.0 - pi1) / (1.0 - pi0))
    others = [usable[dets[j]] for j in idx if j != i]
    free = all(
        float(o[1]) < inc.OTHERS_FREE_OCC and (int(o[0]) == 0 or o[2] is None or float(o[2]) >= inc.FREE_FRAC * limit)
        for o in others
    )
    v_i = usable[dets[i]][2]
    if ci > 0 and v_i is not None:
        v = float(v_i)
        if v >= inc.FREE_FRAC * limit:
            llr["slow"] += inc.LLR_FREE
        elif free and v < inc.VERY_SLOW_FRAC * limit:
            llr["slow"] += inc.LLR_VERY_SLOW
            llr["_slow_reading"] = 1.0
        elif free and v < inc.SLOW_FRAC * limit:
            llr["slow"] += inc.LLR_SLOW
            llr["_slow_reading"] = 1.0
    elif ci == 0 and free and float(usable[dets[i]][1]) >= inc.STANDING_OCC:
        llr["slow"] += inc.LLR_STANDING
        llr["_slow_reading"] = 1.0
    return llr


def test_lane_llr_is_bit_identical_to_the_plain_formulas() -> None:
    rng = random.Random(8)
    limit = 50.0
    for _ in range(3000):
        lanes = rng.choice((2, 3))
        dets = {i: f"up{i}" for i in range(lanes)}
        usable: dict[str, list[Any]] = {}
        for i in range(lanes):
            count = rng.choice((0, 0, 1, 2, 5, 9, 14))
            occ = rng.choice((0.0, 0.01, 0.05, 0.2, 0.95))
            speed = None if count == 0 or rng.random() < 0.1 else rng.choice((4.0, 9.0, 15.0, 25.0, 48.0))
            usable[dets[i]] = [count, occ, speed]
        down_lanes = {str(i): f"down{i}" for i in range(lanes)} if rng.random() < 0.6 else {}
        for i in range(lanes):
            if down_lanes and rng.random() < 0.8:
                usable[f"down{i}"] = [rng.randint(0, 12), 0.05, 40.0]
        xs: dict[str, Any] = {
            "n": [rng.uniform(0.0, 120.0) for _ in range(lanes)],
            "r": [[rng.uniform(0.0, 60.0), rng.uniform(0.0, 60.0)] for _ in range(lanes)],
            "mp": [float(rng.randint(0, 12)) for _ in range(lanes)],
        }
        idx = [i for i in range(lanes) if rng.random() < 0.9] or [0, 1]
        c = {i: int(usable[dets[i]][0]) for i in idx}
        N = float(sum(c.values()))
        n_sum = sum([xs["n"][i] for i in idx])
        armed = n_sum >= inc.SHARE_MIN_VEH
        conc = min(inc.SHARE_CONC_MAX, n_sum + inc.SHARE_PRIOR_VEH)
        not_free = [
            j
            for j in idx
            if not (
                float(usable[dets[j]][1]) < inc.OTHERS_FREE_OCC
                and (
                    int(usable[dets[j]][0]) == 0
                    or usable[dets[j]][2] is None
                    or float(usable[dets[j]][2]) >= inc.FREE_FRAC * limit
                )
            )
        ]
        rho = inc.HYPOTHESES
        for i in idx:
            p = min(inc.SHARE_MAX, (xs["n"][i] + inc.SHARE_PRIOR_VEH / len(idx)) / (n_sum + inc.SHARE_PRIOR_VEH))
            free = not not_free or (len(not_free) == 1 and not_free[0] == i)
            ref = _reference_llr(xs, i, p, c[i], N, armed, usable, dets, idx, limit, down_lanes)
            got = inc._lane_llr(
                xs,
                i,
                p,
                c[i],
                armed,
                conc,
                round(N),
                usable,
                dets[i],
                free,
                limit,
                down_lanes,
                rho["block"],
                rho["partial"],
                rho["slow"],
            )
            slow_reading = ref.pop("_slow_reading", 0.0) > 0.0
            assert got == (ref["block"], ref["partial"], ref["slow"], slow_reading)


def test_max_evidence_matches_builtin_max() -> None:
    rng = random.Random(3)
    for _ in range(200):
        state = {
            "x": {
                name: {"J": {h: [rng.choice((0.0, rng.uniform(0.0, 10.0))) for _ in range(2)] for h in inc.HYPOTHESES}}
                for name in ("mid_link", "stop_line")
            }
        }
        expected = max([0.0] + [v for xs in state["x"].values() for js in xs["J"].values() for v in js])
        assert inc._max_evidence(state) == expected
