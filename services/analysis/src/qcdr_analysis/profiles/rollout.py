"""Rollouts: a new image of a workload starts from the baseline of the image it replaced.

Profiles are per image digest, so every rollout brings a digest nobody has learned. Learning it
from scratch would leave the workload unwatched for the whole learning period (48 h by default),
and a Deployment that ships daily would never be watched at all. So when a batch holds the first
events of a new profile, the workload of its first event is looked up (this worker's memory, else
``analysis_profile_workloads``): if that workload ran another image of the **same repository**
(``registry/app:1`` then ``registry/app:2``; a sidecar's image never passes anything to the app's)
whose profile is ready (or itself inherited) and was active within ``inherit_max_age`` of this
event, the new profile starts from that baseline (:meth:`Profile.successor`) and learns only
``rollout_learning_period`` (1 h by default) on top of it: what the new version does in its first
hour joins the baseline, anything new after that is scored as usual. The finding's learning
window names the image the baseline came from, and ``GET /v1/profiles/{ref}`` shows it.

Executable hashes are not inherited (a new build has new ones), so ``drift.modified_executable``
covers the executables the new image runs while it learns. Only the first batch that holds a new
profile costs anything here (one or two queries); every other batch skips this module.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from qcdr_common.contracts.events.v1 import SecurityEvent
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.profiles import repository as repo
from qcdr_analysis.profiles.identity import has_identity, profile_key, workload_key
from qcdr_analysis.profiles.profile import Profile
from qcdr_analysis.profiles.store import ProfileStore


def repository(image: str | None) -> str | None:
    """``registry:5000/team/app`` of ``registry:5000/team/app:1.2@sha256:…``; None without one."""
    if not image:
        return None
    name = image.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    last = last.split(":", 1)[0]  # the tag (a registry's port sits before a slash)
    return f"{head}{slash}{last}" or None


def _donor_usable(donor: Profile, t: float, max_age: float) -> bool:
    # an inherited profile still in its short window carries a whole baseline too
    if not donor.ready and donor.inherited is None:
        return False
    return donor.last_seen is not None and t - donor.last_seen <= max_age


async def successors(
    session: AsyncSession,
    events: Sequence[SecurityEvent],
    new: Collection[str],
    store: ProfileStore,
    max_age: float,
) -> dict[str, Profile]:
    """New profile key -> the profile it starts from, for the keys of ``new`` whose first event
    in ``events`` comes from a workload that ran another image of the same repository."""
    firsts: dict[str, SecurityEvent] = {}
    for event in events:
        if has_identity(event.workload):
            key = profile_key(event.workload)
            if key in new and key not in firsts:
                firsts[key] = event
    if not firsts:
        return {}
    wanted = {workload_key(e.workload) for e in firsts.values()}
    before: dict[str, tuple[str, str | None]] = {}
    for wkey in wanted:
        entry = store.workloads.get(wkey)
        if entry is not None:
            before[wkey] = (entry.profile_key, entry.workload.image)
    if wanted - before.keys():
        before.update(await repo.workload_images(session, wanted - before.keys()))
    donor_of: dict[str, str] = {}
    for key, event in firsts.items():
        previous = before.get(workload_key(event.workload))
        if previous is None or previous[0] == key:
            continue
        image = repository(event.workload.image)
        if image is not None and image == repository(previous[1]):
            donor_of[key] = previous[0]
    if not donor_of:
        return {}
    donors = {k: p for k in set(donor_of.values()) if (p := store.get(k)) is not None}
    missing = dict.fromkeys(set(donor_of.values()) - donors.keys(), -1)
    if missing:
        for key, generation, data in await repo.fetch_changed(session, missing):
            if data is not None:
                donors[key] = Profile.from_json(data, store.limits, generation)
    out = {}
    for key, donor_key in donor_of.items():
        donor = donors.get(donor_key)
        if donor is not None and _donor_usable(donor, firsts[key].event_time.timestamp(), max_age):
            out[key] = donor
    return out
