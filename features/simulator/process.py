"""Simulation of one chunk of leads: attributes, the latent weekly process, observations, truth.

The generating process
----------------------
*Leads* arrive on days drawn by :func:`features.simulator.world.build_world`. Each has static
attributes and a hidden firmographic **fit** (a function of the attributes with interactions, plus
noise), a true **need** (topic, depending on industry), a **loudness** (how much it clicks around,
whatever its intent) and an e-mail affinity.

The *latent state* is a weekly Markov chain on :data:`catalog.PHASES`, evaluated at each week start
``ws_t`` of the grid ``config.start + 7 t days`` (from the first week start after the lead's creation;
during its first, partial week a lead keeps the phase it arrived in). With ``f = fit *
config.fit_strength``, during week ``t``:

- Campaigns: each campaign active that week reaches the lead independently, with a probability set
  by its reach and targeting, the lead's need and its phase at ``ws_t``. A touch *fires* with
  probability ``min(effect_c * exp(0.45 f), 0.9)`` (``effect_c`` is the campaign's true effect,
  zero for some) if the lead is dormant, researching or evaluating, and moves it one step on.
- ``dormant``: sales disqualifies it with probability ``q_t`` (poor fit, older than
  ``disqualify_after_weeks``); otherwise it starts a buying journey if a natural entry happens
  (probability ``h_t = entry_hazard * exp(0.45 f) * buying_season_t``) or a campaign fired. A journey
  starts in ``research``, or for urgent needs (``urgent_need_share``) directly in ``evaluation``.
- ``research`` -> ``evaluation`` (fired, or naturally) or ``no_decision``; ``evaluation`` ->
  ``decision`` (fired, or naturally) or ``no_decision``; ``decision`` -> ``won`` or ``lost``; the
  natural moves have constant per-lead weekly probabilities (faster and more often won for better
  fit).
- ``no_decision``, ``won``, ``lost`` and ``disqualified`` are absorbing.

At most one transition happens per week, at a uniformly distributed instant inside it (moves caused
by a campaign happen after the touch).

*Observations* are emitted from the phase at each week start and the lead's own traits, never from
the future: intent activity (a Poisson count per week whose rate and type mix depend on the phase,
ramping up during a journey, times the lead's loudness and a gamma burst), background activity for
everyone (newsletters, random visits), campaign touches, a creation activity, outbound call
sequences, and sales follow-up after an MQL. Stages are derived from them: ``mql`` by a points rule,
``sql`` when a demo request is accepted, ``opportunity`` on entering ``decision``, then ``won`` /
``lost``, or ``disqualified``.

The true propensity
-------------------
``propensity(lead, ws_t) = P(won in (ws_t, ws_t + horizon] | phase at ws_t, the lead's static
traits)``, computed exactly by backward recursion over the ``K = ceil(horizon / 7)`` weekly steps
of the chain (the last step counts with weight ``(horizon - 7 (K - 1)) / 7``, the chance that a
conversion in that week falls inside the horizon, since transition instants are uniform in the
week). Campaign touches in future weeks are random, so they enter through the probability that
some campaign fires in a week given the phase at its start, which is exact because reach and firing
are independent across campaigns and weeks given the phase.
Observations are conditionally independent of the future given the phase and traits, so this is the
Bayes-optimal score for any model of the observed data: an honest ceiling.

Drift
-----
With ``config.drift_after`` set, prospects *engage differently* from that day on (UTC midnight), while
what happens to them (phases, stages, conversions, the true propensity) stays that of the undrifted
world: the observed activity of every lead at or after the drift start is rewritten, with probabilities
scaled by ``config.drift_strength`` (``s``):

Campaign touches keep their type and channel; only self-directed activity changes:

- activity mix: a newsletter e-mail open becomes a web visit with probability ``0.7 s`` (inbox
  engagement collapses, ad traffic grows); an e-mail click becomes a content download with probability
  ``0.5 s``; a pricing-page view becomes a plain web visit with probability ``0.5 s`` (pricing moved
  behind a form);
- channel mix: self-directed web activity (organic, direct, paid, social, referral traffic), including
  the rewritten visits, comes from paid search with probability ``0.6 s`` (a switch to paid acquisition);
- recorded attributes: a new sign-up form asks for annual revenue in thousands of USD and the CRM stores
  the typed figure in the million-USD field, so a lead created at or after the drift start has
  ``annual_revenue_musd`` 1000 times too large with probability ``0.5 s`` (the true revenue, and so the
  lead's propensity and outcome, are unchanged: only what the model sees).

The rewrite draws from its own random stream (one per chunk), after every draw of the undrifted
process, so the same seed gives byte-identical data before the drift start, and identical leads,
stages and conversions throughout; only activities at or after the drift start, and the recorded
revenue of leads created from then on, differ.
"""

from __future__ import annotations

import numpy as np

from features.simulator import catalog as cat
from features.simulator.chunk_data import NO_TIME, ChunkData
from features.simulator.sampling import logit, other_topic, sample_choice, sample_rows, sigmoid
from features.simulator.world import (
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    SECONDS_PER_WEEK,
    STREAM_CHUNK,
    STREAM_DRIFT,
    World,
)

# How strongly fit drives each part of the process (multiplied by config.fit_strength).
_ENTRY_FIT_SLOPE = 0.45
_IN_MARKET_FIT_SLOPE = 0.45
_WIN_FIT_SLOPE = 0.4
_PROGRESS_FIT_SLOPE = 0.15
_DQ_FIT_SLOPE = 3.0
_DQ_FIT_CENTRE = -0.9
_TRIGGER_CAP = 0.9
_INITIAL_PHASE_SHARES = np.array([0.55, 0.33, 0.12])  # research, evaluation, decision
_SOURCE_IN_MARKET = cat.SOURCE_IN_MARKET - float(cat.SOURCE_IN_MARKET @ cat.SOURCE_WEIGHTS)
_REVENUE_MISSING_BY_SIZE = np.array([1.6, 1.3, 1.0, 0.8, 0.6, 0.5])
_REVENUE_MISSING_BY_SIZE = _REVENUE_MISSING_BY_SIZE / float(_REVENUE_MISSING_BY_SIZE @ cat.COMPANY_SIZE_WEIGHTS)
_BG_EMAIL_SHARE = 0.58
_EMAIL_UNSUBSCRIBED = 0.15


class _Chunk:
    """Working state of one chunk; :meth:`run` returns its :class:`ChunkData`."""

    revenue_observed: np.ndarray  # set by _attributes; _drift may rewrite it

    def __init__(self, world: World, chunk_index: int) -> None:
        self.w = world
        self.cfg = world.config
        self.k = chunk_index
        self.first = chunk_index * self.cfg.chunk_size
        self.n = min(self.cfg.chunk_size, world.n_leads - self.first)
        if self.n <= 0:
            raise ValueError(f"chunk {chunk_index} is empty for {world.n_leads} leads")
        self.rng = np.random.default_rng(np.random.SeedSequence(world.seed, spawn_key=(STREAM_CHUNK, chunk_index)))
        self.T = world.n_weeks
        self.T_ext = world.n_weeks + world.horizon_weeks

    # ------------------------------------------------------------------------------------------
    def run(self) -> ChunkData:
        self._arrivals()
        self._attributes()
        self._parameters()
        self._chain()
        prop = self._propensity()
        acts = self._activities()
        stages, acts = self._stages(acts)
        acts = self._drift(acts)
        return self._result(acts, stages, prop)

    # -- drift ---------------------------------------------------------------------------------------
    def _drift(self, acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rewrite activities at or after ``config.drift_start`` (see "Drift" in the module docstring)."""
        start = self.cfg.drift_start
        if start is None:
            return acts
        drift_s = int(start.timestamp())
        rng = np.random.default_rng(np.random.SeedSequence(self.w.seed, spawn_key=(STREAM_DRIFT, self.k)))
        s = self.cfg.drift_strength
        acts = {k: v.copy() for k, v in acts.items()}
        # Campaign touches keep their own type and channel: the drift is in self-directed behaviour.
        after = (acts["time"] >= drift_s) & (acts["campaign"] < 0)
        m = len(after)
        a_type, channel, value = acts["type"], acts["channel"], acts["value"]
        u = rng.random(m)
        to_visit = after & (
            ((a_type == cat.EMAIL_OPEN) & (u < 0.7 * s)) | ((a_type == cat.PRICING_VIEW) & (u < 0.5 * s))
        )
        to_download = after & (a_type == cat.EMAIL_CLICK) & (u < 0.5 * s)
        a_type[to_visit] = cat.WEB_VISIT
        a_type[to_download] = cat.CONTENT_DOWNLOAD
        pages = 1 + rng.poisson(0.7, m)
        value[to_visit] = pages[to_visit].astype(value.dtype)
        value[to_download] = np.nan
        # the rewritten activities are web traffic now; some of it, and of all web traffic, is paid
        web = np.array([cat.CH_ORGANIC, cat.CH_DIRECT, cat.CH_PAID, cat.CH_SOCIAL, cat.CH_REFERRAL])
        fresh = web[sample_choice(rng, cat.WEB_CHANNEL_WEIGHTS, m)]
        rewritten = to_visit | to_download
        channel[rewritten] = fresh[rewritten]
        paid = after & np.isin(channel, web) & (rng.random(m) < 0.6 * s)
        channel[paid] = cat.CH_PAID
        # the new sign-up form asks for revenue in thousands: the CRM stores what was typed
        typed_in_thousands = (self.created >= drift_s) & (rng.random(self.n) < 0.5 * s)
        self.revenue_observed = np.where(typed_in_thousands, self.revenue_observed * 1000.0, self.revenue_observed)
        return acts

    # -- leads ---------------------------------------------------------------------------------
    def _arrivals(self) -> None:
        w, rng = self.w, self.rng
        g = np.arange(self.first, self.first + self.n, dtype=np.int64)
        day = np.searchsorted(w.first_lead_of_day, g, side="right") - 1
        rank = g - w.first_lead_of_day[day]
        # Stratified within the day, so creation times increase with the lead index.
        q = (rank + rng.random(self.n)) / w.leads_per_day[day]
        tod = np.floor(np.interp(q, w.signup_day_cdf, w.day_cdf_knots_s)).astype(np.int64)
        created = w.start_s + day * SECONDS_PER_DAY + np.minimum(tod, SECONDS_PER_DAY - 1)
        if self.first == 0:
            # The first lead is the data set's origin: it anchors snapshot grids to the weekly grid.
            created[0] = w.start_s
        self.day = day
        self.created = created
        self.t0 = (created - w.start_s) // SECONDS_PER_WEEK + 1  # first week start after creation

    def _attributes(self) -> None:
        w, rng, n = self.w, self.rng, self.n
        base = np.broadcast_to(cat.SOURCE_WEIGHTS, (n, len(cat.SOURCES))).copy()
        event_c = w.event_on_day[self.day]
        paid_c = w.paid_on_day[self.day]
        social_c = w.social_on_day[self.day]
        # On trade-show days a large share of new leads are badge scans; ads bring more leads.
        base[:, cat.SRC_EVENT] = np.where(event_c >= 0, 0.5, 0.015)
        base[:, cat.SRC_PAID] *= np.where(paid_c >= 0, 1.6, 1.0)
        base[:, cat.SRC_SOCIAL] *= np.where(social_c >= 0, 1.6, 1.0)
        source = sample_rows(rng, np.cumsum(base / base.sum(axis=1, keepdims=True), axis=1))
        linked = rng.random(n) < 0.8
        src_campaign = np.full(n, -1, dtype=np.int64)
        src_campaign = np.where(source == cat.SRC_EVENT, event_c, src_campaign)
        src_campaign = np.where((source == cat.SRC_PAID) & linked, paid_c, src_campaign)
        src_campaign = np.where((source == cat.SRC_SOCIAL) & linked, social_c, src_campaign)

        industry = sample_choice(rng, cat.INDUSTRY_WEIGHTS, n)
        size_cum = np.cumsum(np.exp(cat.size_logits()), axis=1)
        size_cum /= size_cum[:, -1:]
        size = sample_rows(rng, size_cum[industry])
        sen_cum = np.cumsum(np.exp(cat.seniority_logits()), axis=1)
        sen_cum /= sen_cum[:, -1:]
        seniority = sample_rows(rng, sen_cum[size])
        country = sample_choice(rng, cat.COUNTRY_WEIGHTS, n)
        # Badge scans come from the event's region.
        ev = np.flatnonzero(src_campaign >= 0)
        ev = ev[source[ev] == cat.SRC_EVENT]
        if len(ev):
            allowed = w.campaigns.target_country[src_campaign[ev]] * cat.COUNTRY_WEIGHTS[None, :]
            country[ev] = sample_rows(rng, np.cumsum(allowed / allowed.sum(axis=1, keepdims=True), axis=1))
        revenue = np.exp(np.log(cat.COMPANY_SIZE_REVENUE_MUSD[size]) + cat.REVENUE_SIGMA * rng.standard_normal(n))
        revenue = np.round(revenue, 2) + 0.01
        missing = rng.random(n) < self.cfg.revenue_missing_rate * _REVENUE_MISSING_BY_SIZE[size]
        topic_cum = np.cumsum(cat.TOPIC_BY_INDUSTRY, axis=1)
        topic_cum /= topic_cum[:, -1:]
        true_topic = sample_rows(rng, topic_cum[industry])
        fit = cat.firmographic_fit(source, industry, size, country, seniority, revenue)
        fit = fit + cat.FIT_NOISE_SD * rng.standard_normal(n)
        loud_shape = self.cfg.loudness_shape
        loudness = rng.gamma(loud_shape, 1.0 / loud_shape, n) * cat.SENIORITY_LOUDNESS[seniority]
        email_aff = rng.gamma(0.8, 1.0 / 0.8, n) * (rng.random(n) >= _EMAIL_UNSUBSCRIBED) / (1 - _EMAIL_UNSUBSCRIBED)

        self.source, self.src_campaign = source, src_campaign
        self.industry, self.size, self.seniority, self.country = industry, size, seniority, country
        self.revenue_observed = np.where(missing, np.nan, revenue)
        self.true_topic, self.fit, self.loudness, self.email_aff = true_topic, fit, loudness, email_aff

    def _parameters(self) -> None:
        """Per-lead transition probabilities and per-(lead, week) dormant hazards."""
        cfg, w, n = self.cfg, self.w, self.n
        fit = self.fit * cfg.fit_strength
        self.phi = np.exp(_ENTRY_FIT_SLOPE * fit)
        r_exit, e_exit, d_exit = 1 / cfg.research_weeks, 1 / cfg.evaluation_weeks, 1 / cfg.decision_weeks
        self.p_ra = np.full(n, r_exit * cfg.research_abandon_share)
        self.p_re = np.minimum(
            r_exit * (1 - cfg.research_abandon_share) * np.exp(_PROGRESS_FIT_SLOPE * fit), 0.95 - self.p_ra
        )
        self.p_ea = np.full(n, e_exit * cfg.evaluation_abandon_share)
        self.p_en = np.minimum(
            e_exit * (1 - cfg.evaluation_abandon_share) * np.exp(_PROGRESS_FIT_SLOPE * fit), 0.95 - self.p_ea
        )
        win = sigmoid(logit(cfg.decision_win_share) + _WIN_FIT_SLOPE * fit)
        self.p_nw = d_exit * win
        self.p_nl = d_exit * (1 - win)

        ws = w.week_start_s[None, : self.T_ext]
        self.h = np.minimum(cfg.entry_hazard_per_week * self.phi[:, None] * w.buying_season[None, :], 0.5)
        dq_ok = (ws - self.created[:, None]) >= cfg.disqualify_after_weeks * SECONDS_PER_WEEK
        q_base = cfg.disqualify_hazard_per_week * sigmoid(-_DQ_FIT_SLOPE * (fit - _DQ_FIT_CENTRE))
        self.q = np.where(dq_ok, q_base[:, None], 0.0)

        # Campaign targeting and need match, per (lead, campaign).
        camps = w.campaigns
        self.targeted = camps.target_industry[:, self.industry].T & camps.target_country[:, self.country].T
        topic_mult = np.where(
            camps.topic[None, :] < 0,
            1.0,
            np.where(camps.topic[None, :] == self.true_topic[:, None], cat.CAMPAIGN_TOPIC_MATCH_BOOST, 0.8),
        )
        self.camp_affinity = self.targeted * topic_mult
        self.trigger = np.minimum(camps.effect[None, :] * self.phi[:, None], _TRIGGER_CAP)

        # Initial phase: inbound leads are more often already in a journey; a campaign that created
        # the lead (trade show, ad) can have triggered the journey too.
        p_in = sigmoid(logit(cfg.initial_in_market_rate) + _SOURCE_IN_MARKET[self.source] + _IN_MARKET_FIT_SLOPE * fit)
        if len(camps):
            has_c = self.src_campaign >= 0
            trig0 = np.where(has_c, self.trigger[np.arange(n), np.maximum(self.src_campaign, 0)], 0.0)
            p_in = 1 - (1 - p_in) * (1 - trig0)
        in_market = self.rng.random(n) < p_in
        which = sample_choice(self.rng, _INITIAL_PHASE_SHARES, n) + cat.RESEARCH
        self.initial_phase = np.where(in_market, which, cat.DORMANT).astype(np.int8)

    # -- the latent chain ------------------------------------------------------------------------
    def _chain(self) -> None:
        w, rng, n, T = self.w, self.rng, self.n, self.T
        phase = self.initial_phase.copy()
        phases = np.full((n, T), -1, dtype=np.int8)  # phase at each week start (-1: not yet created)
        # log P(no campaign fires) per (lead, week) for a lead dormant / researching / evaluating at the
        # week start: the expected campaign effect used by the exact recursion in _propensity.
        self.log_no_fire = np.zeros((3, n, self.T_ext))
        journey_start = np.where(phase != cat.DORMANT, self.created, NO_TIME)
        decision_start = np.where(phase == cat.DECISION, self.created, NO_TIME)
        journey_end = np.full(n, NO_TIME, dtype=np.int64)
        dq_time = np.full(n, NO_TIME, dtype=np.int64)
        touches: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
        lead_idx = np.arange(n)
        movable = np.zeros(cat.N_PHASES, dtype=bool)
        movable[[cat.DORMANT, cat.RESEARCH, cat.EVALUATION]] = True
        for t in range(T):
            ws = int(w.week_start_s[t])
            week_end = ws + SECONDS_PER_WEEK
            live = self.t0 <= t
            phases[:, t] = np.where(live, phase, -1)
            dormant = live & (phase == cat.DORMANT)
            fired = np.zeros(n, dtype=bool)
            fire_time = np.full(n, week_end, dtype=np.int64)
            for wc in w.week_campaigns[t]:
                c = wc.campaign
                base = wc.base_reach * self.camp_affinity[:, c]
                for slot, ph in enumerate((cat.DORMANT, cat.RESEARCH, cat.EVALUATION)):
                    p_ph = np.minimum(base * cat.CAMPAIGN_ENGAGEMENT[ph], 0.95)
                    self.log_no_fire[slot, :, t] += np.log1p(-p_ph * self.trigger[:, c])
                p_touch = np.minimum(base * cat.CAMPAIGN_ENGAGEMENT[phase], 0.95)
                touched = live & (rng.random(n) < p_touch)
                idx = lead_idx[touched]
                if not len(idx):
                    continue
                off = w.sample_in_week(
                    np.full(len(idx), float(wc.lo_s - ws)), np.full(len(idx), float(wc.hi_s - ws)), rng.random(len(idx))
                )
                when = ws + np.floor(off).astype(np.int64)
                touches.append((idx, c, when, phase[idx].copy()))
                fires = movable[phase[idx]] & (rng.random(len(idx)) < self.trigger[idx, c])
                hit = idx[fires]
                fired[hit] = True
                fire_time[hit] = np.minimum(fire_time[hit], when[fires])

            u = rng.random(n)
            u_entry = rng.random(n)
            u_time = rng.random(n)
            u_urgent = rng.random(n)
            tau = ws + np.floor(u_time * SECONDS_PER_WEEK).astype(np.int64)
            # A move caused by a campaign happens after the touch.
            after = fire_time + np.floor(u_time * (week_end - fire_time)).astype(np.int64)
            new = phase.copy()

            # Dormant: disqualified, else a journey starts naturally or because a campaign fired.
            dq = dormant & (u < self.q[:, t]) & (tau < w.end_s)
            natural = u_entry < self.h[:, t]
            enter_time = np.where(natural, tau, after)
            enter = dormant & ~dq & (natural | fired) & (enter_time < w.end_s)
            new[dq] = cat.DISQUALIFIED
            dq_time[dq] = tau[dq]
            # Urgent needs (an incident, a deadline) skip the research phase.
            new[enter] = np.where(u_urgent[enter] < self.cfg.urgent_need_share, cat.EVALUATION, cat.RESEARCH)
            journey_start[enter] = enter_time[enter]

            # Research / evaluation: a campaign that fires moves the lead on; otherwise natural moves.
            move_time = np.where(fired, after, tau)
            in_time = move_time < w.end_s
            res = live & (phase == cat.RESEARCH) & in_time
            adv = res & (fired | (u < self.p_re))
            drop = res & ~adv & (u < self.p_re + self.p_ra)
            new[adv] = cat.EVALUATION
            ev = live & (phase == cat.EVALUATION) & in_time
            adv2 = ev & (fired | (u < self.p_en))
            drop2 = ev & ~adv2 & (u < self.p_en + self.p_ea)
            new[adv2] = cat.DECISION
            decision_start[adv2] = move_time[adv2]
            dec = live & (phase == cat.DECISION) & (tau < w.end_s)
            won = dec & (u < self.p_nw)
            lost = dec & ~won & (u < self.p_nw + self.p_nl)
            new[won] = cat.WON
            new[lost] = cat.LOST
            gone = drop | drop2
            new[gone] = cat.NO_DECISION
            ended = gone | won | lost
            journey_end[ended] = move_time[ended]
            phase = new

        self.phases = phases
        self.final_phase = phase
        self.journey_start = journey_start
        self.decision_start = decision_start
        self.journey_end = journey_end
        self.dq_time = dq_time
        self.close_time = np.where(
            np.isin(phase, (cat.WON, cat.LOST)), journey_end, np.where(phase == cat.DISQUALIFIED, dq_time, NO_TIME)
        )
        self.touches = touches

    # -- ground-truth propensity ------------------------------------------------------------------
    def _propensity(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact P(won within the horizon | phase at week start, traits) for every open lead-week.

        Backward recursion over the window's weekly steps k = K-1 .. 0 for all week starts at once:
        ``x[:, t]`` is the chance of a (weighted) conversion in the rest of a window whose step k is
        week t. Decision-phase transitions do not depend on the week, so that value is per lead.
        """
        w, K = self.w, self.w.horizon_weeks
        reward = np.ones(K)
        reward[-1] = w.horizon_last_weight
        urgent = self.cfg.urgent_need_share

        no_fire = np.exp(self.log_no_fire)
        p_en = 1 - no_fire[2] * (1 - self.p_en[:, None])  # fired, or advanced naturally
        stay_e = no_fire[2] * (1 - self.p_en - self.p_ea)[:, None]
        p_re = 1 - no_fire[1] * (1 - self.p_re[:, None])
        stay_r = no_fire[1] * (1 - self.p_re - self.p_ra)[:, None]
        not_dq = 1 - self.q
        stay_d = not_dq * (1 - self.h) * no_fire[0]
        enter_d = not_dq - stay_d
        del no_fire
        stay_n = 1 - self.p_nw - self.p_nl

        def shifted(x: np.ndarray) -> np.ndarray:
            """Value at the next week start (zero past the end of the extended grid)."""
            out = np.empty_like(x)
            out[:, :-1] = x[:, 1:]
            out[:, -1] = 0.0
            return out

        f_n = np.zeros(self.n)
        f_e = np.zeros_like(self.q)
        f_r = np.zeros_like(self.q)
        g = np.zeros_like(self.q)
        for k in range(K - 1, -1, -1):
            next_n, next_e, next_r, next_g = f_n, shifted(f_e), shifted(f_r), shifted(g)
            f_n = self.p_nw * reward[k] + stay_n * next_n
            f_e = p_en * next_n[:, None] + stay_e * next_e
            f_r = p_re * next_e + stay_r * next_r
            g = enter_d * ((1 - urgent) * next_r + urgent * next_e) + stay_d * next_g

        phases = self.phases
        open_cell = (phases >= 0) & ~np.isin(phases, cat.CLOSED_PHASES)
        lead, week = np.nonzero(open_cell)
        ph = phases[lead, week]
        value = np.zeros(len(lead))
        value = np.where(ph == cat.DORMANT, g[lead, week], value)
        value = np.where(ph == cat.RESEARCH, f_r[lead, week], value)
        value = np.where(ph == cat.EVALUATION, f_e[lead, week], value)
        value = np.where(ph == cat.DECISION, f_n[lead], value)
        return lead, week, value.astype(np.float32), ph

    # -- observed activity ------------------------------------------------------------------------
    def _activities(self) -> dict[str, np.ndarray]:
        w, cfg, rng, T = self.w, self.cfg, self.rng, self.T
        ws_all = w.week_start_s[:T]
        # Cells: (lead, week) from the creation week on; the creation week uses the arrival phase.
        t_first = self.t0 - 1
        exists = np.arange(T)[None, :] >= t_first[:, None]
        lead, week = np.nonzero(exists)
        ws = ws_all[week]
        first_cell = week == t_first[lead]
        ph = np.where(first_cell, self.initial_phase[lead], self.phases[lead, week]).astype(np.int64)
        lo = np.where(first_cell, self.created[lead] - ws, 0).astype(np.float64)
        hi_full = np.minimum(SECONDS_PER_WEEK, w.end_s - ws).astype(np.float64)
        close = self.close_time[lead]
        hi_open = np.clip(close - ws, 0, None).astype(np.float64)
        hi_open = np.where(close == NO_TIME, hi_full, np.minimum(hi_full, hi_open))
        mass_full = w.week_mass(lo, hi_full)
        mass_open = np.where(hi_open > lo, w.week_mass(lo, np.maximum(hi_open, lo)), 0.0)

        # Intent: phase rate x ramp x loudness x burst; dormant-like phases use the noise rate.
        journey_weeks = np.cumsum((self.phases >= cat.RESEARCH) & (self.phases <= cat.DECISION), axis=1)
        ramp = np.minimum(1.0 + cat.RAMP_PER_WEEK * np.maximum(journey_weeks[lead, week] - 1, 0), cat.RAMP_CAP)
        dormant_like = (ph == cat.DORMANT) | (ph == cat.NO_DECISION)
        rate = np.where(
            dormant_like, cfg.dormant_intent_per_week, cfg.journey_intent_per_week * cat.PHASE_INTENSITY[ph] * ramp
        )
        burst = rng.gamma(cfg.burstiness_shape, 1.0 / cfg.burstiness_shape, len(lead))
        rate = rate * self.loudness[lead] * burst * mass_open
        n_intent = rng.poisson(rate)
        bg = cfg.background_activities_per_week * mass_full
        n_email = rng.poisson(bg * _BG_EMAIL_SHARE * self.email_aff[lead])
        n_web = rng.poisson(bg * (1 - _BG_EMAIL_SHARE) * np.sqrt(self.loudness[lead]))

        parts: list[dict[str, np.ndarray]] = []
        # Intent activities.
        cell = np.repeat(np.arange(len(lead)), n_intent)
        m = len(cell)
        a_lead, a_ph = lead[cell], ph[cell]
        a_type = np.minimum((rng.random(m)[:, None] >= cat.INTENT_TYPE_CUM[a_ph]).sum(axis=1), cat.N_TYPES - 1)
        a_time = ws[cell] + np.floor(w.sample_in_week(lo[cell], hi_open[cell], rng.random(m))).astype(np.int64)
        parts.append(self._describe(a_lead, a_time, a_type, a_ph, campaign=None))
        # Background: newsletters (opens, some clicks) and random visits/downloads, for everyone.
        for counts, types, shares in (
            (n_email, (cat.EMAIL_OPEN, cat.EMAIL_CLICK), 0.88),
            (n_web, (cat.WEB_VISIT, cat.CONTENT_DOWNLOAD), 0.86),
        ):
            cell = np.repeat(np.arange(len(lead)), counts)
            m = len(cell)
            b_type = np.where(rng.random(m) < shares, types[0], types[1])
            b_time = ws[cell] + np.floor(w.sample_in_week(lo[cell], hi_full[cell], rng.random(m))).astype(np.int64)
            parts.append(
                self._describe(lead[cell], b_time, b_type, np.full(m, cat.DORMANT), campaign=None, background=True)
            )
        parts.append(self._campaign_touches())
        parts.append(self._creation_activities())
        parts.append(self._outbound_sequences())
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _describe(
        self,
        lead: np.ndarray,
        time_s: np.ndarray,
        a_type: np.ndarray,
        phase: np.ndarray,
        *,
        campaign: np.ndarray | None,
        background: bool = False,
        channel: np.ndarray | None = None,
        topic: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Channel, topic and value for activities (campaign touches pass channel and topic)."""
        rng, m = self.rng, len(lead)
        a_type = a_type.astype(np.int64)
        phase = phase.astype(np.int64)
        if channel is None:
            web = sample_choice(rng, cat.WEB_CHANNEL_WEIGHTS, m)  # organic, direct, paid, social, referral
            web_channel = np.array([cat.CH_ORGANIC, cat.CH_DIRECT, cat.CH_PAID, cat.CH_SOCIAL, cat.CH_REFERRAL])[web]
            channel = np.select(
                [
                    (a_type == cat.EMAIL_OPEN) | (a_type == cat.EMAIL_CLICK),
                    a_type == cat.WEBINAR,
                    a_type == cat.EVENT_ATTENDANCE,
                    a_type == cat.SALES_CALL,
                ],
                [cat.CH_EMAIL, cat.CH_WEBINAR, cat.CH_EVENT, cat.CH_SALES],
                web_channel,
            )
        if topic is None:
            true = self.true_topic[lead]
            p_true = np.full(m, cat.BACKGROUND_TOPIC_FIDELITY) if background else cat.TOPIC_FIDELITY[phase]
            tagged = rng.random(m) < cat.TOPIC_TAGGED[a_type]
            topic = np.where(rng.random(m) < p_true, true, other_topic(rng, true))
            topic = np.where(tagged, topic, -1)
        value = self._values(a_type, phase, background)
        return {
            "lead": lead.astype(np.int64),
            "time": time_s.astype(np.int64),
            "type": a_type.astype(np.int8),
            "channel": np.asarray(channel).astype(np.int8),
            "campaign": (np.full(m, -1) if campaign is None else campaign).astype(np.int16),
            "topic": topic.astype(np.int8),
            "value": value,
        }

    def _values(self, a_type: np.ndarray, phase: np.ndarray, background: bool) -> np.ndarray:
        """Pages viewed (visits), minutes (pricing, webinar, event, call); NaN for other types."""
        rng, m = self.rng, len(a_type)
        engaged = (phase >= cat.RESEARCH) & (phase <= cat.DECISION) & (not background)
        pages = 1 + rng.poisson(np.where(engaged, 2.4, 0.7))
        pricing = np.round(rng.lognormal(np.log(np.where(engaged, 3.0, 1.2)), 0.7), 1)
        webinar = np.round(np.clip(rng.normal(np.where(engaged, 44.0, 27.0), 15.0), 1.0, 75.0), 0)
        event = np.round(rng.lognormal(np.log(np.where(engaged, 14.0, 7.0)), 0.8), 0)
        connected = rng.random(m) < np.where(engaged, 0.65, 0.35)
        call = np.where(connected, np.round(rng.lognormal(np.log(np.where(engaged, 18.0, 6.0)), 0.7), 0), 0.0)
        value = np.select(
            [
                a_type == cat.WEB_VISIT,
                a_type == cat.PRICING_VIEW,
                a_type == cat.WEBINAR,
                a_type == cat.EVENT_ATTENDANCE,
                a_type == cat.SALES_CALL,
            ],
            [pages.astype(np.float64), pricing, webinar, event, call],
            np.nan,
        )
        return np.where(rng.random(m) < self.cfg.value_missing_rate, np.nan, value)

    def _campaign_touches(self) -> dict[str, np.ndarray]:
        camps, rng = self.w.campaigns, self.rng
        if not self.touches:
            return self._describe(*(np.zeros(0, dtype=np.int64),) * 4, campaign=np.zeros(0, dtype=np.int64))
        lead = np.concatenate([t[0] for t in self.touches])
        c = np.concatenate([np.full(len(t[0]), t[1]) for t in self.touches])
        when = np.concatenate([t[2] for t in self.touches])
        ph = np.concatenate([t[3] for t in self.touches]).astype(np.int64)
        a_type = camps.activity_type[c]
        topic = camps.topic[c]
        touch = self._describe(lead, when, a_type, ph, campaign=c, channel=camps.channel[c], topic=topic)
        # E-mail opens lead to clicks, more often for leads in a journey.
        in_journey = (ph >= cat.RESEARCH) & (ph <= cat.DECISION)
        click = (a_type == cat.EMAIL_OPEN) & (rng.random(len(lead)) < np.where(in_journey, 0.35, 0.18))
        click_time = when + 30 + np.floor(rng.exponential(600.0, len(lead))).astype(np.int64)
        click &= click_time < self.w.end_s
        ci = np.flatnonzero(click)
        clicks = self._describe(
            lead[ci],
            click_time[ci],
            np.full(len(ci), cat.EMAIL_CLICK),
            ph[ci],
            campaign=c[ci],
            channel=np.full(len(ci), cat.CH_EMAIL),
            topic=topic[ci],
        )
        return {k: np.concatenate([touch[k], clicks[k]]) for k in touch}

    def _creation_activities(self) -> dict[str, np.ndarray]:
        """The form fill, ad click, badge scan or call that created the lead (partners send none)."""
        rng, n = self.rng, self.n
        src = self.source
        inbound = np.isin(src, (cat.SRC_ORGANIC, cat.SRC_PAID, cat.SRC_SOCIAL, cat.SRC_REFERRAL))
        demo = inbound & (self.initial_phase >= cat.EVALUATION) & (rng.random(n) < 0.5)
        a_type = np.select(
            [src == cat.SRC_EVENT, src == cat.SRC_OUTBOUND, demo, src == cat.SRC_ORGANIC],
            [
                cat.EVENT_ATTENDANCE,
                cat.SALES_CALL,
                cat.DEMO_REQUEST,
                np.where(rng.random(n) < 0.6, cat.CONTENT_DOWNLOAD, cat.WEB_VISIT),
            ],
            cat.WEB_VISIT,
        )
        channel = np.select(
            [
                src == cat.SRC_EVENT,
                src == cat.SRC_OUTBOUND,
                src == cat.SRC_PAID,
                src == cat.SRC_SOCIAL,
                src == cat.SRC_REFERRAL,
            ],
            [cat.CH_EVENT, cat.CH_SALES, cat.CH_PAID, cat.CH_SOCIAL, cat.CH_REFERRAL],
            cat.CH_ORGANIC,
        )
        keep = np.flatnonzero(src != cat.SRC_PARTNER)
        camp = self.src_campaign[keep]
        own = np.where(rng.random(len(keep)) < 0.7, self.true_topic[keep], other_topic(rng, self.true_topic[keep]))
        campaign_topic = self.w.campaigns.topic[np.maximum(camp, 0)] if len(self.w.campaigns) else own
        topic = np.where(camp >= 0, campaign_topic, own)
        topic = np.where(np.isin(a_type[keep], (cat.SALES_CALL, cat.EVENT_ATTENDANCE)) & (camp < 0), -1, topic)
        return self._describe(
            keep,
            self.created[keep],
            a_type[keep],
            self.initial_phase[keep],
            campaign=camp,
            channel=channel[keep],
            topic=topic,
        )

    def _outbound_sequences(self) -> dict[str, np.ndarray]:
        """SDR call attempts in the three weeks after an outbound lead is created."""
        rng = self.rng
        out = np.flatnonzero(self.source == cat.SRC_OUTBOUND)
        k = rng.integers(1, 5, len(out))
        lead = np.repeat(out, k)
        when = self.created[lead] + SECONDS_PER_HOUR + np.floor(rng.random(len(lead)) * 20 * SECONDS_PER_DAY)
        when = when.astype(np.int64)
        ok = (when < self.w.end_s) & (when < self.close_time[lead])
        lead, when = lead[ok], when[ok]
        return self._phase_activities(lead, when, cat.SALES_CALL, cat.CH_SALES)

    def _phase_activities(self, lead: np.ndarray, when: np.ndarray, a_type: int, channel: int) -> dict:
        wk = (when - self.w.start_s) // SECONDS_PER_WEEK
        ph = np.where(wk < self.t0[lead], self.initial_phase[lead], self.phases[lead, np.minimum(wk, self.T - 1)])
        m = len(lead)
        return self._describe(
            lead, when, np.full(m, a_type), ph, campaign=None, channel=np.full(m, channel), topic=np.full(m, -1)
        )

    # -- stages ------------------------------------------------------------------------------------
    def _stages(self, acts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        w, rng, n = self.w, self.rng, self.n
        close = self.close_time
        # MQL: first activity at which the lead's points within its calendar week reach the threshold.
        pts = cat.MQL_POINTS[acts["type"]]
        sel = np.flatnonzero((pts > 0) & (acts["time"] < close[acts["lead"]]))
        s_lead, s_time, s_pts = acts["lead"][sel], acts["time"][sel], pts[sel].astype(np.int64)
        order = np.lexsort((s_time, s_lead))
        s_lead, s_time, s_pts = s_lead[order], s_time[order], s_pts[order]
        group = s_lead * (self.T + 1) + (s_time - w.start_s) // SECONDS_PER_WEEK
        new_group = np.ones(len(group), dtype=bool)
        new_group[1:] = group[1:] != group[:-1]
        cum = np.cumsum(s_pts)
        base = np.maximum.accumulate(np.where(new_group, cum - s_pts, 0)) if len(cum) else cum
        hit = np.flatnonzero(cum - base >= cat.MQL_THRESHOLD)
        mql = np.full(n, NO_TIME, dtype=np.int64)
        first_hit_lead, first = np.unique(s_lead[hit], return_index=True)
        mql[first_hit_lead] = s_time[hit[first]]
        # Partners send qualified leads.
        mql = np.where(self.source == cat.SRC_PARTNER, self.created, mql)

        # SQL: a demo request accepted by sales after a short delay (if still open).
        demo = np.flatnonzero((acts["type"] == cat.DEMO_REQUEST) & (acts["time"] < close[acts["lead"]]))
        sql = np.full(n, NO_TIME, dtype=np.int64)
        np.minimum.at(sql, acts["lead"][demo], acts["time"][demo])
        delay = SECONDS_PER_HOUR + np.floor(rng.exponential(1.2 * SECONDS_PER_DAY, n)).astype(np.int64)
        sql = np.where(sql < NO_TIME, sql + delay, sql)
        opp = np.where(self.decision_start < w.end_s, self.decision_start, NO_TIME)
        sql = np.minimum(sql, opp)
        sql = np.where((sql < close) & (sql < w.end_s), sql, NO_TIME)
        mql = np.minimum(mql, sql)
        mql = np.where((mql < close) & (mql < w.end_s), mql, NO_TIME)

        # Sales follows up new MQLs with one or two calls (whatever the lead's intent).
        has_mql = np.flatnonzero(mql < NO_TIME)
        k = rng.integers(1, 3, len(has_mql))
        f_lead = np.repeat(has_mql, k)
        f_when = mql[f_lead] + 2 * SECONDS_PER_HOUR + np.floor(rng.random(len(f_lead)) * 9 * SECONDS_PER_DAY)
        f_when = f_when.astype(np.int64)
        ok = (f_when < w.end_s) & (f_when < close[f_lead])
        follow = self._phase_activities(f_lead[ok], f_when[ok], cat.SALES_CALL, cat.CH_SALES)
        acts = {key: np.concatenate([acts[key], follow[key]]) for key in acts}

        phase = self.final_phase
        won = np.where(phase == cat.WON, self.journey_end, NO_TIME)
        lost = np.where(phase == cat.LOST, self.journey_end, NO_TIME)
        dq = np.where(phase == cat.DISQUALIFIED, self.dq_time, NO_TIME)
        columns = [self.created, mql, sql, opp, won, lost, dq]
        times = np.stack(columns, axis=1)
        have = times < NO_TIME
        s_lead, s_code = np.nonzero(have)
        stages: dict[str, np.ndarray] = {
            "lead": s_lead.astype(np.int64),
            "code": s_code.astype(np.int8),
            "time": times[s_lead, s_code],
        }
        return stages, acts

    # -- assembly ----------------------------------------------------------------------------------
    def _result(
        self,
        acts: dict[str, np.ndarray],
        stages: dict[str, np.ndarray],
        prop: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> ChunkData:
        acts = _sorted_unique(acts, self.w.start_s, self.w.end_s)
        phase = self.final_phase
        outcome = np.where(
            self.journey_start < NO_TIME,
            np.where(np.isin(phase, (cat.WON, cat.LOST, cat.NO_DECISION)), phase, cat.RESEARCH),
            -1,
        ).astype(np.int8)
        return ChunkData(
            first_lead=self.first,
            n=self.n,
            created_s=self.created,
            source=self.source.astype(np.int8),
            industry=self.industry.astype(np.int8),
            company_size=self.size.astype(np.int8),
            country=self.country.astype(np.int8),
            seniority=self.seniority.astype(np.int8),
            revenue_observed=self.revenue_observed,
            true_topic=self.true_topic.astype(np.int8),
            fit=self.fit,
            loudness=self.loudness,
            initial_phase=self.initial_phase,
            journey_start_s=self.journey_start,
            journey_outcome=outcome,
            converted_s=np.where(phase == cat.WON, self.journey_end, NO_TIME),
            lost_s=np.where(phase == cat.LOST, self.journey_end, NO_TIME),
            no_decision_s=np.where(phase == cat.NO_DECISION, self.journey_end, NO_TIME),
            disqualified_s=np.where(phase == cat.DISQUALIFIED, self.dq_time, NO_TIME),
            act_lead=acts["lead"],
            act_time_s=acts["time"],
            act_type=acts["type"],
            act_channel=acts["channel"],
            act_campaign=acts["campaign"],
            act_topic=acts["topic"],
            act_value=acts["value"],
            stage_lead=stages["lead"],
            stage_code=stages["code"],
            stage_time_s=stages["time"],
            prop_lead=prop[0],
            prop_week=prop[1],
            prop_value=prop[2],
            prop_phase=prop[3],
        )


def _sorted_unique(acts: dict[str, np.ndarray], start_s: int, end_s: int) -> dict[str, np.ndarray]:
    """Sort by (lead, time, type); move exact duplicates (same lead, second, type) by a second."""
    time = acts["time"].copy()
    lead, a_type = acts["lead"], acts["type"].astype(np.int64)
    for _ in range(100):
        key = (lead << 36) | ((time - start_s) << 4) | a_type
        order = np.argsort(key, kind="stable")
        key = key[order]
        dup = np.flatnonzero(key[1:] == key[:-1]) + 1
        if not len(dup):
            break
        rows = order[dup]
        shifted = time[rows] + 1
        time[rows] = np.where(shifted < end_s, shifted, time[rows] - 1)
    else:  # pragma: no cover - would need a hundred events of one type in one second
        raise RuntimeError("could not separate duplicate activities")
    out = {k: v[order] for k, v in acts.items() if k != "time"}
    out["time"] = time[order]
    return out


def simulate_chunk(world: World, chunk_index: int) -> ChunkData:
    """Simulate leads ``[chunk_index * chunk_size, ...)`` of ``world`` (deterministic per chunk)."""
    return _Chunk(world, chunk_index).run()
