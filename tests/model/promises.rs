//! Properties 3 to 5: what writers are told, no lost update, and no
//! generation handed out twice.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::world::{SaveKind, World};
use super::writers::{Outcome, Saver, WriteKind, WriteOutcome};

/// Property 3, as a write returns: what its outcome says about its save.
pub fn check_outcome(world: &World, o: &WriteOutcome) -> Result<(), TestCaseError> {
    let saves = world.saves();
    let mine: Vec<_> = saves.iter().filter(|s| s.by == o.id).collect();
    let accepted = mine.iter().find(|s| s.accepted.is_some());
    match &o.outcome {
        Outcome::Ok => {
            let save = accepted.ok_or_else(|| {
                TestCaseError::fail(format!(
                    "write {o:?} returned Ok, but the store took no save"
                ))
            })?;
            // A restore can wipe the lease from under a writer whose release
            // then cannot get through: it cannot tell, but as long as nobody
            // took the lease since, nobody else held it.
            prop_assert!(
                save.held || (o.restored && save.free),
                "write {o:?} returned Ok, but its save {save:?} was not made under its lease"
            );
            // No other save was accepted before this write let its lease go
            // (a write runs on a task of its own: its caller may hear `Ok`
            // after the next writer saved). Without a release that got
            // through, what the caller saw must do.
            let top = world
                .releases
                .top_at_release(save.fence)
                .unwrap_or(o.top_fence);
            prop_assert_eq!(
                top,
                save.fence,
                "write {:?} returned Ok after another writer's save was accepted",
                o
            );
        }
        Outcome::LeaseLost { saved: Some(false) } => prop_assert!(
            accepted.is_none(),
            "write {o:?} was told its save did not happen, but the store took it {accepted:?}"
        ),
        // A saver that failed may have saved: the writer was told so.
        Outcome::LeaseLost { saved: None } => {}
        Outcome::LeaseLost { saved: Some(true) } | Outcome::Bump => prop_assert!(
            accepted.is_some(),
            "write {o:?} was told it was saved, but the store took no save"
        ),
        Outcome::Locked | Outcome::Start | Outcome::Load => prop_assert!(
            mine.is_empty(),
            "write {o:?} said nothing was saved, but its saver ran: {mine:?}"
        ),
        Outcome::Save => {}
        Outcome::Other(e) => prop_assert!(false, "write {o:?}: unexpected error {e}"),
    }
    // A refused save means a newer writer took the lease: the writer must
    // hear that its lease was lost. A restore can take the lease from under
    // a writer before it lapses; if the writer's release cannot get through
    // either, it only has the store's refusal to go by, and reports that
    // (a `StaleFence` naming the newer token).
    if mine.iter().any(|s| s.accepted.is_none()) {
        let lost = o.outcome == Outcome::LeaseLost { saved: Some(false) };
        prop_assert!(
            lost || (o.restored && o.outcome == Outcome::Save),
            "write {o:?}: the store refused its save, and it was not told its lease was lost"
        );
    }
    // A save the store took while the lease was not the writer's (it had
    // lapsed: renewals that kept failing through the load and the save,
    // or nobody else could have taken it without the fence refusing the
    // save): the writer must hear that its lease was lost, whatever its
    // bump did. A restore can wipe the lease unseen (see above).
    if let Some(save) = accepted.filter(|s| !s.held && !o.restored) {
        prop_assert!(
            matches!(
                o.outcome,
                Outcome::LeaseLost {
                    saved: Some(true) | None
                }
            ),
            "write {o:?}: the store took its save {save:?} made without its lease, and it was \
             not told its lease was lost"
        );
    }
    if o.healthy && matches!(o.saver, Saver::Quick | Saver::SlowMs(_)) {
        prop_assert!(
            matches!(o.outcome, Outcome::Ok | Outcome::Locked),
            "write {o:?} failed on a healthy fleet with a working saver"
        );
    }
    Ok(())
}

/// Property 3 on every save (the fence orders writers), and property 5.
pub fn saves_and_bumps(world: &World) -> Result<(), TestCaseError> {
    if let Some(save) = world
        .saves()
        .iter()
        .find(|s| s.held && s.accepted.is_none())
    {
        prop_assert!(
            false,
            "the store refused {save:?}, made while its writer held the lease"
        );
    }
    if let Some(g) = world.reissued() {
        prop_assert!(false, "two bumps handed out the same generation {g}");
    }
    Ok(())
}

/// Property 4: every update that returned `Ok` is in the final source,
/// unless a publish whose document was read before that update's save was
/// accepted after it (publish writes blind, and promises no more).
pub fn no_lost_update(world: &World, outcomes: &[WriteOutcome]) -> Result<(), TestCaseError> {
    let saves = world.saves();
    let applied = world.applied();
    let updates = outcomes
        .iter()
        .filter(|o| o.kind == WriteKind::Update && o.outcome == Outcome::Ok);
    for update in updates {
        // Property 3 made sure, when it returned, that it has one.
        let (at, version) = saves
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.accepted.filter(|_| s.by == update.id).map(|v| (i, v)))
            .expect("an update that returned Ok has an accepted save");
        let replaced = saves[at + 1..].iter().any(|s| {
            s.kind == SaveKind::Publish
                && s.accepted.is_some()
                && s.base.is_some_and(|base| base < version)
        });
        prop_assert!(
            replaced || applied.contains(&update.id),
            "update {:?} returned Ok, but its change is gone from the source {:?}; saves: {:?}",
            update,
            applied,
            saves
        );
    }
    Ok(())
}
