"""The cache (``cache.ClusterView``) on plain data: which copy of an object wins, what a
deletion, a listing and a release leave behind, which target keys each change touches,
and the counts kept up to date on every change (checked against a recomputation from the
surviving objects over random histories)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_operator.cache import UNDECIDED, ActivityClock, ClusterView
from session_operator.model import ACTIVITY_ANNOTATION, HOLDER_UID_ANNOTATION, TARGET_ANNOTATION, Claim

CREATED = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)  # in the past, whatever the wall clock says
LATER = datetime(2035, 1, 1, tzinfo=UTC)  # "now" for oldest_undecided, after every real time a test sees


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session(
    name: str,
    rv: int,
    *,
    ns: str = "ns",
    target: str = "t",
    uid: str | None = None,
    generation: int = 1,
    phase: str | None = None,
    observed: int | None = None,
    created: datetime = CREATED,
    deleting: bool = False,
    activity: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "namespace": ns,
        "name": name,
        "uid": uid or f"uid-{name}",
        "resourceVersion": str(rv),
        "generation": generation,
        "creationTimestamp": stamp(created),
    }
    if deleting:
        metadata["deletionTimestamp"] = stamp(created + timedelta(hours=1))
    if activity is not None:
        metadata["annotations"] = {ACTIVITY_ANNOTATION: activity}
    body: dict[str, Any] = {"metadata": metadata, "spec": {"target": target}}
    if phase is not None:
        body["status"] = {"phase": phase, "observedGeneration": generation if observed is None else observed}
    return body


def lease(
    target: str | None,
    rv: int,
    *,
    ns: str = "ns",
    holder: str | None = "a",
    holder_uid: str | None = "uid-a",
    transitions: int = 0,
) -> dict[str, Any]:
    annotations = {}
    if target is not None:
        annotations[TARGET_ANNOTATION] = target
    if holder_uid is not None:
        annotations[HOLDER_UID_ANNOTATION] = holder_uid
    return {
        "metadata": {
            "namespace": ns,
            "name": f"session-target-{target}",
            "resourceVersion": str(rv),
            "annotations": annotations,
        },
        "spec": {"holderIdentity": holder, "leaseTransitions": transitions},
    }


def rv_of(view: ClusterView, uid: str) -> str | None:
    current = view.session(uid)
    return None if current is None else current.resource_version


KEY = ("ns", "t")


# --- sessions: which copy wins ---------------------------------------------------------


def test_newest_resource_version_wins_between_watch_and_own_writes() -> None:
    view = ClusterView()
    assert view.session_event("ADDED", session("a", 5)) == {KEY}
    written = view.session_written(session("a", 7, phase="Active"))
    assert written.resource_version == "7"
    assert rv_of(view, "uid-a") == "7"
    # The watch catches up: first the version before our write, then our own write.
    assert view.session_event("MODIFIED", session("a", 6)) == set()
    assert view.session_event("MODIFIED", session("a", 7, phase="Active")) == set()
    assert rv_of(view, "uid-a") == "7"
    assert view.session("uid-a").phase == "Active"  # type: ignore[union-attr]
    # Somebody else's later change wins over our write.
    assert view.session_event("MODIFIED", session("a", 9, phase="Active", generation=2, observed=1)) == {KEY}
    assert rv_of(view, "uid-a") == "9"
    # An answer to a write of ours that is older than what the watch brought loses.
    view.session_written(session("a", 8, phase="Queued"))
    assert rv_of(view, "uid-a") == "9"


def test_stale_watch_event_after_our_write_changes_nothing_and_touches_nothing() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3))
    view.session_written(session("a", 4, phase="Active"))
    before = view.phase_counts()
    assert view.session_event("MODIFIED", session("a", 3, phase="Rejected")) == set()
    assert view.session("uid-a").phase == "Active"  # type: ignore[union-attr]
    assert view.phase_counts() == before == {("ns", "Active"): 1}


def test_first_write_answer_for_an_unseen_session_is_kept() -> None:
    view = ClusterView()
    written = view.session_written(session("a", 4, phase="Active"))
    assert view.session("uid-a") == written
    assert view.sessions(KEY) == [written]


def test_deleted_leaves_a_tombstone_so_a_late_write_answer_cannot_resurrect() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3))
    assert view.session_event("DELETED", session("a", 6)) == {KEY}
    assert view.session("uid-a") is None
    assert view.known_gone("uid-a")
    # The answer to a write sent before the deletion arrives late (with a higher version
    # than anything the cache held): it is returned to the caller but not stored.
    late = view.session_written(session("a", 5, phase="Active"))
    assert late.phase == "Active"
    assert view.session("uid-a") is None
    assert view.sessions(KEY) == []
    assert len(view) == 0
    assert view.phase_counts() == {}
    assert view.keys() == set()


def test_deleted_event_for_an_unknown_session_touches_nothing_but_is_remembered() -> None:
    view = ClusterView()
    assert view.session_event("DELETED", session("a", 6)) == set()
    assert view.known_gone("uid-a")
    view.session_written(session("a", 7, phase="Active"))
    assert view.session("uid-a") is None


def test_session_gone_removes_tombstones_and_touches_its_key() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3, phase="Active"))
    view.session_event("ADDED", session("b", 4, phase="Queued"))
    assert view.session_gone("uid-a") == {KEY}
    assert [s.name for s in view.sessions(KEY)] == ["b"]
    assert view.known_gone("uid-a")
    assert view.session_gone("uid-a") == set()  # twice: nothing left to touch
    view.session_written(session("a", 9, phase="Inactive"))
    assert view.session("uid-a") is None
    assert view.phase_counts() == {("ns", "Queued"): 1}


def test_tombstones_are_bounded_oldest_first() -> None:
    view = ClusterView(tombstones=2)
    for name in ("a", "b", "c"):
        view.session_gone(f"uid-{name}")
    assert not view.known_gone("uid-a")
    assert view.known_gone("uid-b") and view.known_gone("uid-c")


def test_event_touches_its_key_and_a_target_change_touches_both() -> None:
    view = ClusterView()
    assert view.session_event("ADDED", session("a", 3, target="t1", phase="Active")) == {("ns", "t1")}
    assert view.session_event("ADDED", session("b", 4, target="t1", phase="Queued")) == {("ns", "t1")}
    # The schema forbids a target change; a server without CEL lets it through.
    touched = view.session_event("MODIFIED", session("a", 5, target="t2", generation=2, observed=1, phase="Active"))
    assert touched == {("ns", "t1"), ("ns", "t2")}
    assert [s.name for s in view.sessions(("ns", "t1"))] == ["b"]
    assert [s.name for s in view.sessions(("ns", "t2"))] == ["a"]
    assert view.phase_counts() == {("ns", "Queued"): 1, ("ns", UNDECIDED): 1}
    # The last one leaves: the empty group is gone.
    view.session_event("MODIFIED", session("b", 6, target="t2", generation=2, observed=1, phase="Queued"))
    assert view.sessions(("ns", "t1")) == []
    assert view.keys() == {("ns", "t2")}


def test_same_target_in_two_namespaces_is_two_groups() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3, ns="x", uid="ux"))
    view.session_event("ADDED", session("a", 4, ns="y", uid="uy"))
    assert [s.uid for s in view.sessions(("x", "t"))] == ["ux"]
    assert [s.uid for s in view.sessions(("y", "t"))] == ["uy"]
    assert view.phase_counts() == {("x", UNDECIDED): 1, ("y", UNDECIDED): 1}


# --- sessions: listings ----------------------------------------------------------------


def test_listing_removes_sessions_it_does_not_contain_unless_written_since() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("kept", 3, target="t1", phase="Active"))
    view.session_event("ADDED", session("deleted", 4, target="t2", phase="Active"))
    view.session_event("ADDED", session("new", 5, target="t3"))
    view.session_written(session("new", 12, target="t3", phase="Active"))  # after the listing's version
    view.session_event("ADDED", session("other-ns", 6, ns="elsewhere", target="t2"))
    listing = view.session_listing("ns")
    listing.add([session("kept", 3, target="t1", phase="Active")])
    listing.add([])  # an empty last page
    touched = listing.finish("10")
    assert touched == {("ns", "t2")}
    assert view.session("uid-deleted") is None and view.known_gone("uid-deleted")
    assert rv_of(view, "uid-kept") == "3"
    assert rv_of(view, "uid-new") == "12"  # written after the listing was taken: not judged by it
    assert rv_of(view, "uid-other-ns") == "6"  # another namespace's listing decides about it
    assert view.phase_counts() == {("ns", "Active"): 2, ("elsewhere", UNDECIDED): 1}


def test_listing_of_every_namespace_judges_every_namespace() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3, ns="x", target="t1"))
    view.session_event("ADDED", session("b", 4, ns="y", target="t2"))
    listing = view.session_listing(None)
    listing.add([session("a", 3, ns="x", target="t1")])
    assert listing.finish("8") == {("y", "t2")}
    assert view.session("uid-b") is None
    assert len(view) == 1


def test_listing_touches_the_keys_it_changed_and_only_those() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("same", 3, target="t1"))
    view.session_event("ADDED", session("older", 4, target="t2"))
    listing = view.session_listing("ns")
    listing.add(
        [
            session("same", 3, target="t1"),  # as held: no change
            session("older", 7, target="t2", phase="Active"),  # changed while the watch was down
            session("unseen", 8, target="t3"),  # created while the watch was down
        ]
    )
    assert listing.finish("9") == {("ns", "t2"), ("ns", "t3")}
    assert rv_of(view, "uid-older") == "7"
    assert rv_of(view, "uid-unseen") == "8"


def test_listing_keeps_a_fresher_copy_of_ours() -> None:
    view = ClusterView()
    view.session_written(session("a", 9, phase="Active"))
    listing = view.session_listing("ns")
    listing.add([session("a", 5)])
    assert listing.finish("8") == set()
    assert rv_of(view, "uid-a") == "9"


# --- claims ----------------------------------------------------------------------------


def test_leases_without_the_target_annotation_are_no_claims() -> None:
    view = ClusterView()
    assert view.claim_event("ADDED", lease(None, 3)) == set()
    assert view.claim_event("DELETED", lease(None, 4)) == set()
    listing = view.claim_listing("ns")
    listing.add([lease(None, 5)])
    assert listing.finish("6") == set()
    assert view.claim_count == 0
    assert view.keys() == set()


def test_claim_added_modified_deleted() -> None:
    view = ClusterView()
    assert view.claim_event("ADDED", lease("t", 3)) == {KEY}
    assert view.claim(KEY) == Claim("session-target-t", "a", "uid-a", "3", 0)
    assert view.keys() == {KEY} and view.claim_count == 1
    assert view.claim_event("MODIFIED", lease("t", 3)) == set()  # the same version again
    assert view.claim_event("MODIFIED", lease("t", 5, holder="b", holder_uid="uid-b", transitions=1)) == {KEY}
    claim = view.claim(KEY)
    assert claim is not None and (claim.holder, claim.holder_uid, claim.transitions) == ("b", "uid-b", 1)
    assert view.claim_event("MODIFIED", lease("t", 4)) == set()  # older than what we hold
    assert view.claim(KEY) == claim
    assert view.claim_event("DELETED", lease("t", 6, holder="b", holder_uid="uid-b")) == {KEY}
    assert view.claim(KEY) is None and view.claim_count == 0
    # What the watch still had queued from before the deletion is stale.
    assert view.claim_event("MODIFIED", lease("t", 5, holder="b", holder_uid="uid-b")) == set()
    assert view.claim(KEY) is None
    # A new claim made afterwards is news.
    assert view.claim_event("ADDED", lease("t", 8, holder="c", holder_uid="uid-c")) == {KEY}


def test_our_release_leaves_a_floor_below_which_watch_events_are_stale() -> None:
    view = ClusterView()
    view.claim_event("ADDED", lease("t", 3))
    held = view.claim(KEY)
    view.claim_written(KEY, Claim.from_body(lease("t", 5)), held)  # our own confirm
    view.claim_written(KEY, None, view.claim(KEY))  # our own release of version 5
    assert view.claim(KEY) is None
    # The watch delivers what happened before the release: all stale.
    assert view.claim_event("MODIFIED", lease("t", 4)) == set()
    assert view.claim_event("MODIFIED", lease("t", 5)) == set()
    assert view.claim(KEY) is None
    # The deletion itself, then someone's new claim, are above the floor.
    assert view.claim_event("DELETED", lease("t", 6)) == {KEY}
    assert view.claim_event("ADDED", lease("t", 7, holder="b", holder_uid="uid-b")) == {KEY}
    assert view.claim(KEY) is not None and view.claim(KEY).holder == "b"  # type: ignore[union-attr]


def test_release_of_a_claim_the_cache_never_saw_uses_the_previous_version() -> None:
    view = ClusterView()
    view.claim_written(KEY, None, Claim.from_body(lease("t", 5)))
    assert view.claim_event("ADDED", lease("t", 5)) == set()
    assert view.claim(KEY) is None


def test_a_floor_never_goes_down() -> None:
    view = ClusterView()
    view.claim_written(KEY, None, Claim.from_body(lease("t", 9)))
    view.claim_written(KEY, None, Claim.from_body(lease("t", 4)))  # a late, older release
    assert view.claim_event("MODIFIED", lease("t", 7)) == set()


def test_claim_written_takes_newer_versions_and_clears_the_floor() -> None:
    view = ClusterView()
    view.claim_written(KEY, None, Claim.from_body(lease("t", 5)))
    created = Claim.from_body(lease("t", 7, holder="b", holder_uid="uid-b"))
    view.claim_written(KEY, created, None)  # we created it again
    assert view.claim(KEY) == created
    view.claim_written(KEY, Claim.from_body(lease("t", 6)), None)  # an older answer
    assert view.claim(KEY) == created
    # The watch's deletion event of version 5 (at 6) is older than what we hold now.
    assert view.claim_event("DELETED", lease("t", 6)) == set()
    assert view.claim(KEY) == created


def test_claim_listing_adds_and_removes_within_its_namespace() -> None:
    view = ClusterView()
    view.claim_event("ADDED", lease("kept", 3))
    view.claim_event("ADDED", lease("deleted", 4))
    view.claim_written(("ns", "mine"), Claim.from_body(lease("mine", 12)), None)  # after the listing
    view.claim_event("ADDED", lease("deleted", 5, ns="elsewhere"))
    listing = view.claim_listing("ns")
    listing.add([lease("kept", 3), lease("new", 8), lease(None, 9)])
    touched = listing.finish("10")
    assert touched == {("ns", "new"), ("ns", "deleted")}
    assert view.claim(("ns", "deleted")) is None
    assert view.claim(("ns", "kept")) is not None
    assert view.claim(("ns", "new")) is not None
    assert view.claim(("ns", "mine")) is not None
    assert view.claim(("elsewhere", "deleted")) is not None
    assert view.claim_count == 4


def test_claim_listing_of_every_namespace() -> None:
    view = ClusterView()
    view.claim_event("ADDED", lease("t", 3, ns="x"))
    view.claim_event("ADDED", lease("t", 4, ns="y"))
    listing = view.claim_listing(None)
    listing.add([lease("t", 3, ns="x")])
    assert listing.finish("5") == {("y", "t")}
    assert view.claim(("y", "t")) is None


def test_keys_are_groups_and_claims() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3, target="t1"))
    view.claim_event("ADDED", lease("t2", 4))
    assert view.keys() == {("ns", "t1"), ("ns", "t2")}


def test_sinks_feed_the_same_view() -> None:
    view = ClusterView()
    sessions, claims = view.session_sink, view.claim_sink
    listing = sessions.listing("ns")
    listing.add([session("a", 3)])
    assert listing.finish("3") == {KEY}
    assert claims.event("ADDED", lease("t", 4)) == {KEY}
    assert view.session("uid-a") is not None and view.claim(KEY) is not None


# --- counts ----------------------------------------------------------------------------


def test_phase_counts_follow_decisions_for_the_current_generation() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3))
    view.session_event("ADDED", session("b", 4, phase="Pending"))  # Pending is no decision
    view.session_event("ADDED", session("c", 5, phase="Queued"))
    assert view.phase_counts() == {("ns", UNDECIDED): 2, ("ns", "Queued"): 1}
    view.session_written(session("a", 6, phase="Active"))
    assert view.phase_counts() == {("ns", UNDECIDED): 1, ("ns", "Active"): 1, ("ns", "Queued"): 1}
    # A spec change: the decision is for an older generation now.
    view.session_event("MODIFIED", session("c", 7, phase="Queued", generation=2, observed=1))
    assert view.phase_counts() == {("ns", UNDECIDED): 2, ("ns", "Active"): 1}
    view.session_event("DELETED", session("b", 8))
    view.session_gone("uid-c")
    assert view.phase_counts() == {("ns", "Active"): 1}


def test_oldest_undecided() -> None:
    view = ClusterView()
    assert view.oldest_undecided(LATER) == 0.0
    view.session_event("ADDED", session("a", 3, created=CREATED))
    view.session_event("ADDED", session("b", 4, created=CREATED + timedelta(seconds=30)))
    assert view.oldest_undecided(CREATED + timedelta(seconds=90)) == 90.0
    assert view.oldest_undecided(CREATED - timedelta(seconds=5)) == 0.0  # never negative
    view.session_written(session("a", 5, phase="Active"))
    assert view.oldest_undecided(CREATED + timedelta(seconds=90)) == 60.0
    # A new version still undecided keeps the time it has waited since.
    view.session_event("MODIFIED", session("b", 6, created=CREATED + timedelta(seconds=30), activity="x"))
    assert view.oldest_undecided(CREATED + timedelta(seconds=90)) == 60.0
    # One being deleted waits for nothing.
    view.session_event("MODIFIED", session("b", 7, created=CREATED + timedelta(seconds=30), deleting=True))
    assert view.oldest_undecided(CREATED + timedelta(seconds=90)) == 0.0
    assert view.phase_counts() == {("ns", "Active"): 1, ("ns", UNDECIDED): 1}


def test_a_spec_change_waits_from_when_it_was_seen_not_from_creation() -> None:
    view = ClusterView()
    view.session_event("ADDED", session("a", 3, phase="Active"))
    before = datetime.now(UTC)
    view.session_event("MODIFIED", session("a", 4, phase="Active", generation=2, observed=1))
    after = datetime.now(UTC)
    waited = view.oldest_undecided(LATER)
    assert (LATER - after).total_seconds() <= waited <= (LATER - before).total_seconds()


# A random history of watch events, write answers, 404s and listings over a few sessions;
# after every step the incrementally kept counts must equal a recount of the survivors,
# and the survivors must be what the rules say.

UIDS = ["u0", "u1", "u2", "u3", "u4"]
NAMESPACE_OF = {"u0": "x", "u1": "x", "u2": "x", "u3": "y", "u4": "y"}
CREATED_OF = {uid: CREATED + timedelta(seconds=10 * i) for i, uid in enumerate(UIDS)}

versions = st.fixed_dictionaries(
    {
        "uid": st.sampled_from(UIDS),
        "rv": st.integers(1, 30),
        "target": st.sampled_from(["t1", "t2"]),
        "generation": st.integers(1, 3),
        "phase": st.sampled_from([None, "Pending", "Active", "Queued", "Rejected"]),
        "observed": st.integers(1, 3),
        "deleting": st.booleans(),
    }
)
operations = st.one_of(
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "written"]), versions),
    st.tuples(st.sampled_from(["DELETED", "gone"]), st.sampled_from(UIDS), st.integers(1, 30)),
    st.tuples(
        st.just("listing"),
        st.sampled_from([None, "x", "y"]),
        st.lists(versions, max_size=5, unique_by=lambda v: v["uid"]),
        st.integers(1, 30),
    ),
)


def version_body(v: dict[str, Any]) -> dict[str, Any]:
    uid = v["uid"]
    return session(
        f"name-{uid}",
        v["rv"],
        ns=NAMESPACE_OF[uid],
        uid=uid,
        target=v["target"],
        generation=v["generation"],
        phase=v["phase"],
        observed=v["observed"],
        created=CREATED_OF[uid],
        deleting=v["deleting"],
    )


class Expected:
    """The rules, written down plainly: which version of each session survives, and since
    when an undecided one waits (an interval when it started waiting at the wall clock)."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()
        self.since: dict[str, tuple[datetime, datetime]] = {}

    @staticmethod
    def undecided(v: dict[str, Any]) -> bool:
        return v["phase"] in (None, "Pending") or v["observed"] != v["generation"]

    def put(self, v: dict[str, Any], window: tuple[datetime, datetime]) -> None:
        held = self.live.get(v["uid"])
        if held is not None and v["rv"] <= held["rv"]:
            return
        self.live[v["uid"]] = v
        if self.undecided(v) and not v["deleting"]:
            if v["uid"] not in self.since:
                created = CREATED_OF[v["uid"]]
                self.since[v["uid"]] = (created, created) if v["generation"] <= 1 else window
        else:
            self.since.pop(v["uid"], None)

    def remove(self, uid: str) -> None:
        self.gone.add(uid)
        self.live.pop(uid, None)
        self.since.pop(uid, None)


def apply(view: ClusterView, expected: Expected, op: tuple[Any, ...]) -> None:
    before = datetime.now(UTC)
    kind = op[0]
    if kind in ("ADDED", "MODIFIED"):
        view.session_event(kind, version_body(op[1]))
    elif kind == "written":
        view.session_written(version_body(op[1]))
    elif kind == "DELETED":
        view.session_event("DELETED", session(f"name-{op[1]}", op[2], uid=op[1], ns=NAMESPACE_OF[op[1]]))
    elif kind == "gone":
        view.session_gone(op[1])
    else:
        _, namespace, listed, list_rv = op
        listed = [v for v in listed if namespace is None or NAMESPACE_OF[v["uid"]] == namespace]
        listing = view.session_listing(namespace)
        listing.add(version_body(v) for v in listed)
        listing.finish(str(list_rv))
    window = (before, datetime.now(UTC))
    if kind in ("ADDED", "MODIFIED"):
        # An event about a session seen deleted (by the watch, or a 404 of our own) is from
        # before the deletion: uids are never reused, and nothing follows a DELETED.
        if op[1]["uid"] not in expected.gone:
            expected.put(op[1], window)
    elif kind == "written":
        if op[1]["uid"] not in expected.gone:
            expected.put(op[1], window)
    elif kind in ("DELETED", "gone"):
        expected.remove(op[1])
    else:
        for v in listed:
            expected.gone.discard(v["uid"])
            expected.put(v, window)
        listed_uids = {v["uid"] for v in listed}
        for uid, v in list(expected.live.items()):
            in_scope = namespace is None or NAMESPACE_OF[uid] == namespace
            if in_scope and uid not in listed_uids and v["rv"] <= list_rv:
                expected.remove(uid)


def check(view: ClusterView, expected: Expected) -> None:
    survivors = {uid: view.session(uid) for uid in UIDS if view.session(uid) is not None}
    # The survivors are what the rules say, at the version they say.
    assert {uid: int(s.resource_version) for uid, s in survivors.items()} == {  # type: ignore[union-attr]
        uid: v["rv"] for uid, v in expected.live.items()
    }
    assert len(view) == len(survivors)
    # Groups, recomputed from the survivors.
    groups: dict[tuple[str, str], set[str]] = {}
    for uid, s in survivors.items():
        assert s is not None
        groups.setdefault((s.namespace, s.target), set()).add(uid)
    assert view.keys() == set(groups)
    for key, uids in groups.items():
        assert {s.uid for s in view.sessions(key)} == uids
    # Counts by phase, recomputed from the survivors.
    recount: Counter[tuple[str, str]] = Counter()
    for s in survivors.values():
        assert s is not None
        decided = s.status.get("observedGeneration") == s.generation and s.phase not in (None, "Pending")
        recount[(s.namespace, s.phase if decided and s.phase else UNDECIDED)] += 1
    assert view.phase_counts() == dict(recount)
    # The oldest undecided wait.
    waited = view.oldest_undecided(LATER)
    if not expected.since:
        assert waited == 0.0
    else:
        earliest = min(lo for lo, _ in expected.since.values())
        latest_of_earliest = min(hi for _, hi in expected.since.values())
        assert (LATER - latest_of_earliest).total_seconds() <= waited <= (LATER - earliest).total_seconds()


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, min_size=1, max_size=30))
def test_counts_and_groups_stay_exact_through_any_history(ops: list[tuple[Any, ...]]) -> None:
    view = ClusterView()
    expected = Expected()
    for op in ops:
        apply(view, expected, op)
        check(view, expected)


# --- activity --------------------------------------------------------------------------

T1 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def test_activity_in_the_future_counts_from_when_it_was_first_seen() -> None:
    clock = ActivityClock()
    future = stamp(T1 + timedelta(hours=5))
    assert clock.observe("u", future, now=T1) == T1
    # Seen again later: still the moment of first sight, or it would never go idle.
    assert clock.observe("u", future, now=T1 + timedelta(minutes=30)) == T1
    # A new value is a new first sight.
    later_future = stamp(T1 + timedelta(hours=6))
    assert clock.observe("u", later_future, now=T1 + timedelta(minutes=40)) == T1 + timedelta(minutes=40)


def test_activity_in_the_past_is_taken_as_written() -> None:
    clock = ActivityClock()
    past = T1 - timedelta(minutes=3)
    assert clock.observe("u", stamp(past), now=T1) == past
    assert clock.observe("u", None, now=T1) is None
    assert clock.observe("u", "", now=T1) is None


def test_forget_drops_the_pin() -> None:
    clock = ActivityClock()
    future = stamp(T1 + timedelta(hours=5))
    clock.observe("u", future, now=T1)
    clock.forget("u")
    assert clock.observe("u", future, now=T1 + timedelta(minutes=1)) == T1 + timedelta(minutes=1)


def test_pins_are_per_session() -> None:
    clock = ActivityClock()
    future = stamp(T1 + timedelta(hours=5))
    assert clock.observe("u", future, now=T1) == T1
    assert clock.observe("v", future, now=T1 + timedelta(minutes=1)) == T1 + timedelta(minutes=1)


def test_an_unreadable_value_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = ActivityClock()
    with caplog.at_level(logging.WARNING, logger="session_operator.cache"):
        assert clock.observe("u", "yesterday", now=T1) is None
        assert clock.observe("u", "yesterday", now=T1) is None
        assert clock.observe("u", "yesterday", now=T1) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "yesterday" in warnings[0].getMessage() and ACTIVITY_ANNOTATION in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="session_operator.cache"):
        clock.observe("u", "tomorrow", now=T1)  # another bad value: worth its own warning
        clock.observe("v", "yesterday", now=T1)  # another session: its own warning
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_an_unreadable_value_replaces_the_pin() -> None:
    clock = ActivityClock()
    future = stamp(T1 + timedelta(hours=5))
    clock.observe("u", future, now=T1)
    assert clock.observe("u", "garbage", now=T1) is None
    assert clock.observe("u", future, now=T1 + timedelta(minutes=1)) == T1 + timedelta(minutes=1)


def test_the_view_pins_future_activity_across_versions() -> None:
    view = ClusterView()
    future = stamp(datetime.now(UTC) + timedelta(days=1))
    first = view.session_written(session("a", 3, phase="Active", activity=future))
    assert first.last_activity is not None and first.last_activity <= datetime.now(UTC)
    second = view.session_written(session("a", 4, phase="Active", activity=future))
    assert second.last_activity == first.last_activity
    # Deleted and seen again (a listing): the pin went with it.
    view.session_gone("uid-a")
    listing = view.session_listing("ns")
    listing.add([session("a", 5, phase="Active", activity=future)])
    listing.finish("5")
    third = view.session("uid-a")
    assert third is not None and third.last_activity is not None
    assert third.last_activity >= first.last_activity


class SteppedActivityClock(ActivityClock):
    """An activity clock whose "now" the test moves."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now

    def observe(self, uid: str, raw: Any, now: datetime | None = None) -> datetime | None:
        return super().observe(uid, raw, now or self.now)


def test_a_stale_copy_does_not_move_the_pin_of_future_activity() -> None:
    clock = SteppedActivityClock(T1)
    view = ClusterView(clock)
    first, second = stamp(T1 + timedelta(hours=1)), stamp(T1 + timedelta(hours=2))
    view.session_event("ADDED", session("a", 3, phase="Active", activity=first))
    clock.now = T1 + timedelta(minutes=1)
    view.session_event("MODIFIED", session("a", 5, phase="Active", activity=second))  # first seen now
    pinned = view.session("uid-a").last_activity  # type: ignore[union-attr]
    assert pinned == T1 + timedelta(minutes=1)
    # The answer to a write made on version 3 arrives after the watch brought version 5;
    # then version 5's annotation is seen again (our next write's answer, say).
    clock.now = T1 + timedelta(minutes=2)
    view.session_written(session("a", 4, phase="Active", activity=first))
    clock.now = T1 + timedelta(minutes=3)
    view.session_written(session("a", 6, phase="Active", activity=second))
    assert view.session("uid-a").last_activity == pinned  # type: ignore[union-attr]


def test_a_late_answer_for_a_deleted_session_pins_nothing() -> None:
    clock = SteppedActivityClock(T1)
    view = ClusterView(clock)
    future = stamp(T1 + timedelta(hours=1))
    view.session_event("ADDED", session("a", 3, activity=future))
    view.session_event("DELETED", session("a", 4))
    view.session_written(session("a", 5, phase="Active", activity=future))
    # Nothing was kept for it: the same value would count from a new first sight.
    assert clock.observe("uid-a", future, now=T1 + timedelta(minutes=9)) == T1 + timedelta(minutes=9)


def test_owner_counts_and_who_decides_first_under_a_cap() -> None:
    from session_operator.policy import Policy

    view = ClusterView()

    def put(name: str, target: str, rv: int, phase: str | None = None, owner: str = "ci", created: int = 0) -> None:
        body: dict[str, Any] = {
            "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": str(rv), "generation": 1,
                         "creationTimestamp": f"2026-01-01T00:00:{created:02d}Z"},
            "spec": {"target": target, "owner": {"username": owner}},
        }
        if phase is not None:
            body["status"] = {"phase": phase, "observedGeneration": 1}
        view.session_event("MODIFIED", body)

    capped = Policy.from_body({"metadata": {"name": "cap"}, "spec": {"perOwner": {"maxActive": 2, "maxQueued": 5},
                                                                      "targetPrefixes": ["repo/"]}})
    put("a", "repo/a", 1, "Active")
    put("q", "repo/q", 2, "Queued")
    put("other", "doc/x", 3, "Active")  # not selected by the prefix
    put("bob", "repo/b", 4, "Active", owner="bob")
    put("new-1", "repo/n1", 5, created=1)
    put("new-2", "repo/n2", 6, created=2)
    counts = view.owner_counts(("ns", "ci"), capped, exclude="repo/zzz")
    assert (counts.active, counts.queued) == (1, 1)
    assert view.owner_counts(("ns", "ci"), capped, exclude="repo/a").active == 0
    first, second = view.sessions(("ns", "repo/n1"))[0], view.sessions(("ns", "repo/n2"))[0]
    assert view.waits_behind(first, capped) is None
    assert (view.waits_behind(second, capped) or first).name == "new-1"
    # Once decided (any phase), it no longer holds anyone back.
    put("new-1", "repo/n1", 7, "Rejected", created=1)
    assert view.waits_behind(second, capped) is None
    assert view.queued_targets(("ns", "ci")) == {("ns", "repo/q")}
