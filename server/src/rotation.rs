//! The refresh-token rotation rule: what presenting a refresh token does. A pure function of
//! the token's state, its session's state, the time and the policy; the store only loads the
//! two states and saves the decision (docs/PROTOCOL.md, "Rotation rules").
//!
//! Every session is a family of tokens in generations: 0 at login, `g + 1` for a child of a
//! token of generation `g`. The session records the highest *claimed* generation (`head`).
//!
//! - **Claim.** The first token of a generation to be presented claims it; every other token of
//!   that generation is dead from then on, and presenting one is reuse.
//! - **Repeat.** The claiming token may be presented again within `grace_secs` of its claim:
//!   the same browser retrying, or tabs without a shared lock. Each repeat is answered with a
//!   new child at the head of the family (`head + 1`), so it is never a dead token even if one of
//!   the claimer's children has been used meanwhile. At most `max_children` per token.
//! - **Reissue.** After the window, the claimer is accepted again only if none of its children
//!   was ever used (the client cannot have received one: a lost response). Its unused children
//!   are revoked, a fresh child is issued and the window starts again.
//! - **Late sibling (DPoP-bound sessions only).** A never-presented token of a generation
//!   another token already claimed claims a child at the head, however late. Tabs without a
//!   shared lock share one cookie jar, and the jar keeps whichever `Set-Cookie` *arrived* last,
//!   not the one the server issued last: a slow response can put a sibling back in the jar
//!   after the other was used, and the jar presents it at the next expiry, minutes later. A
//!   bound session's refresh is only heard with a proof by the session's key (checked before
//!   this rule), which never leaves the page, so a copied cookie alone is refused before any
//!   rule: in a bound session the key, not this detection, is what stops a thief. (A script in
//!   the page can sign with the key, and can refresh anyway.) Bearer sessions, where the cookie
//!   alone is enough, keep the strict rule.
//! - **Reuse.** Anything else that names a live session: a dead sibling, a revoked child, a
//!   superseded claimer after its window. The whole session is revoked.
//!
//! Why this catches a copied token used in turn with the user's, at any rhythm: both copies
//! present the same token; the second presentation is either a repeat (both get children of
//! the same generation, and the first of the two children presented kills the other) or a
//! reissue (which revokes the first one's child). Either way the next round presents a dead
//! token.

/// A refresh token as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub generation: i64,
    /// When this token claimed its generation (or was last reissued from); `None` if it was
    /// never presented.
    pub claimed_at: Option<i64>,
    /// Revoked by a reissue of its parent.
    pub revoked: bool,
    /// Children issued since `claimed_at`.
    pub children: i64,
}

/// The session (token family) the token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyState {
    pub revoked: bool,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    /// Highest claimed generation; -1 before the first refresh.
    pub head: i64,
    /// Bound to a DPoP key: a refresh reaches `decide` only with a proof by that key.
    pub bound: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a claiming token may be presented again for another child.
    pub grace_secs: i64,
    /// How many children one token may have within its window.
    pub max_children: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace_secs: 30,
            max_children: 32,
        }
    }
}

/// What the store must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// First presentation: mark the token claimed at `now`, raise the head to its generation
    /// (a late sibling's is below the head: the head stays), issue a child of generation
    /// `child_generation`.
    Claim { child_generation: i64 },
    /// The claimer again within its window: issue one more child.
    Repeat { child_generation: i64 },
    /// The claimer after its window, none of its children used: revoke the tokens of
    /// generation `child_generation` (all unused), restart the window at `now`, issue a child.
    Reissue { child_generation: i64 },
    /// Reuse: revoke the session.
    Reuse,
    /// The session is over (revoked or expired): nothing changes.
    Invalid,
    /// Too many children within the window: try again after `retry_after` seconds.
    Throttled { retry_after: i64 },
}

/// The rule. `now` is the server's clock in seconds.
pub fn decide(token: TokenState, family: FamilyState, now: i64, policy: Policy) -> Decision {
    if family.revoked || family.idle_expires_at <= now || family.absolute_expires_at <= now {
        return Decision::Invalid;
    }
    if token.revoked {
        return Decision::Reuse;
    }
    let Some(claimed_at) = token.claimed_at else {
        // Never presented: it claims its generation unless another token already has; in a
        // bound session a late sibling from the browser's own cookie jar claims a child at the
        // head all the same (see the module's rules).
        return if token.generation > family.head || family.bound {
            Decision::Claim {
                child_generation: family.head.max(token.generation) + 1,
            }
        } else {
            Decision::Reuse
        };
    };
    let window_ends = claimed_at.saturating_add(policy.grace_secs);
    if now < window_ends {
        if token.children >= policy.max_children {
            return Decision::Throttled {
                retry_after: window_ends - now,
            };
        }
        return Decision::Repeat {
            child_generation: family.head.max(token.generation) + 1,
        };
    }
    if family.head == token.generation {
        Decision::Reissue {
            child_generation: token.generation + 1,
        }
    } else {
        Decision::Reuse
    }
}

/// What a presentation writes: [`decide`]'s decision turned into the store's writes. A store
/// only executes it, on the session version it read (a plan made on stale state writes
/// nothing and is made again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is written; the session is over (`invalid_grant`).
    Invalid,
    /// Nothing is written; try again after `retry_after` seconds.
    Throttled { retry_after: i64 },
    /// Reuse: the session is revoked (reason `token_reused`).
    Revoke,
    /// A child is issued.
    Rotate(Rotate),
}

/// The writes of an accepted presentation, in the order a store applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotate {
    /// Reissue: first the unused tokens of this generation are revoked.
    pub revoke_generation: Option<i64>,
    /// The presented token claims (or re-claims) its generation at `now`, its children
    /// counting from 1; otherwise it counts one more child.
    pub claim: bool,
    /// The session's new head: the highest claimed generation.
    pub head: i64,
    /// The session's new idle expiry, which is also the child's cookie lifetime: `now` plus
    /// the idle lifetime, never past the absolute expiry.
    pub idle_expires_at: i64,
    /// The child's generation.
    pub child_generation: i64,
}

/// The plan for presenting `token` of `family` at `now`: [`decide`], then what it writes.
pub fn plan(
    token: TokenState,
    family: FamilyState,
    now: i64,
    policy: Policy,
    idle_secs: i64,
) -> Plan {
    let idle_expires_at = now
        .saturating_add(idle_secs)
        .min(family.absolute_expires_at);
    let rotate = |revoke_generation, claim, head, child_generation| {
        Plan::Rotate(Rotate {
            revoke_generation,
            claim,
            head,
            idle_expires_at,
            child_generation,
        })
    };
    match decide(token, family, now, policy) {
        Decision::Invalid => Plan::Invalid,
        Decision::Throttled { retry_after } => Plan::Throttled { retry_after },
        Decision::Reuse => Plan::Revoke,
        Decision::Claim { child_generation } => rotate(
            None,
            true,
            token.generation.max(family.head),
            child_generation,
        ),
        Decision::Repeat { child_generation } => rotate(None, false, family.head, child_generation),
        Decision::Reissue { child_generation } => {
            rotate(Some(child_generation), true, family.head, child_generation)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        grace_secs: 30,
        max_children: 3,
    };

    fn live(head: i64) -> FamilyState {
        FamilyState {
            revoked: false,
            idle_expires_at: 10_000,
            absolute_expires_at: 20_000,
            head,
            bound: false,
        }
    }

    fn fresh(generation: i64) -> TokenState {
        TokenState {
            generation,
            claimed_at: None,
            revoked: false,
            children: 0,
        }
    }

    fn claimed(generation: i64, at: i64, children: i64) -> TokenState {
        TokenState {
            generation,
            claimed_at: Some(at),
            revoked: false,
            children,
        }
    }

    /// A tiny model of one family, to replay stories through `decide`.
    struct Family {
        state: FamilyState,
        tokens: Vec<TokenState>,
    }

    impl Family {
        fn new() -> Self {
            Family {
                state: FamilyState {
                    idle_expires_at: i64::MAX,
                    absolute_expires_at: i64::MAX,
                    ..live(-1)
                },
                tokens: vec![fresh(0)],
            }
        }

        /// Presents token `i`; returns the decision and the index of the new child, if any.
        fn present(&mut self, i: usize, now: i64) -> (Decision, Option<usize>) {
            let d = decide(self.tokens[i], self.state, now, P);
            let child = match d {
                Decision::Claim { child_generation } => {
                    self.tokens[i].claimed_at = Some(now);
                    self.state.head = self.state.head.max(self.tokens[i].generation);
                    Some(child_generation)
                }
                Decision::Repeat { child_generation } => Some(child_generation),
                Decision::Reissue { child_generation } => {
                    for t in &mut self.tokens {
                        if t.generation == child_generation {
                            t.revoked = true;
                        }
                    }
                    self.tokens[i].claimed_at = Some(now);
                    self.tokens[i].children = 0;
                    Some(child_generation)
                }
                Decision::Reuse => {
                    self.state.revoked = true;
                    None
                }
                Decision::Invalid | Decision::Throttled { .. } => None,
            };
            let child = child.map(|g| {
                self.tokens[i].children += 1;
                self.tokens.push(fresh(g));
                self.tokens.len() - 1
            });
            (d, child)
        }
    }

    fn accepted(d: Decision) -> bool {
        matches!(
            d,
            Decision::Claim { .. } | Decision::Repeat { .. } | Decision::Reissue { .. }
        )
    }

    #[test]
    fn the_first_presentation_claims_the_generation() {
        assert_eq!(
            decide(fresh(0), live(-1), 0, P),
            Decision::Claim {
                child_generation: 1
            }
        );
        assert_eq!(
            decide(fresh(4), live(3), 0, P),
            Decision::Claim {
                child_generation: 5
            }
        );
    }

    #[test]
    fn a_sibling_of_the_claimer_is_reuse() {
        assert_eq!(decide(fresh(4), live(4), 0, P), Decision::Reuse);
        assert_eq!(decide(fresh(2), live(4), 0, P), Decision::Reuse);
    }

    #[test]
    fn the_claimer_repeats_within_its_window_for_a_child_at_the_head() {
        assert_eq!(
            decide(claimed(4, 100, 1), live(4), 129, P),
            Decision::Repeat {
                child_generation: 5
            }
        );
        // One of its children was used meanwhile: the new child is issued after the head, so
        // the browser that keeps it is not holding a dead token.
        assert_eq!(
            decide(claimed(4, 100, 1), live(6), 110, P),
            Decision::Repeat {
                child_generation: 7
            }
        );
    }

    #[test]
    fn children_per_token_are_capped_within_the_window() {
        assert_eq!(
            decide(claimed(4, 100, 3), live(4), 110, P),
            Decision::Throttled { retry_after: 20 }
        );
    }

    #[test]
    fn after_the_window_the_claimer_is_reissued_only_if_no_child_was_used() {
        assert_eq!(
            decide(claimed(4, 100, 3), live(4), 130, P),
            Decision::Reissue {
                child_generation: 5
            }
        );
        assert_eq!(decide(claimed(4, 100, 1), live(5), 130, P), Decision::Reuse);
    }

    #[test]
    fn a_revoked_child_is_reuse() {
        let mut t = fresh(5);
        t.revoked = true;
        assert_eq!(decide(t, live(4), 0, P), Decision::Reuse);
    }

    #[test]
    fn a_dead_session_is_invalid_whatever_the_token() {
        let mut f = live(4);
        f.revoked = true;
        assert_eq!(decide(fresh(5), f, 0, P), Decision::Invalid);
        assert_eq!(decide(fresh(5), live(4), 10_000, P), Decision::Invalid);
        let mut f = live(4);
        f.absolute_expires_at = 50;
        assert_eq!(decide(claimed(4, 0, 0), f, 50, P), Decision::Invalid);
    }

    /// The thief copies the user's current token; then they take turns, `rounds` times, with
    /// `gap` seconds between presentations. Returns the round (1-based) in which a
    /// presentation was refused as reuse.
    fn lockstep(thief_first: bool, gap: i64, rounds: usize) -> Option<usize> {
        let mut f = Family::new();
        let (_, user0) = f.present(0, 0);
        let mut user = user0.unwrap();
        let mut thief = user; // the copy
        let mut now = 100;
        for round in 1..=rounds {
            for turn in 0..2 {
                let thief_turn = (turn == 0) == thief_first;
                let holder = if thief_turn { thief } else { user };
                now += gap;
                let (d, child) = f.present(holder, now);
                if d == Decision::Reuse {
                    return Some(round);
                }
                assert!(accepted(d), "round {round}: {d:?}");
                let child = child.unwrap();
                if thief_turn {
                    thief = child;
                } else {
                    user = child;
                }
            }
        }
        None
    }

    #[test]
    fn a_thief_in_lockstep_is_caught_by_the_second_round_at_any_rhythm() {
        for gap in [0, 1, 10, 29, 30, 31, 600, 86_000] {
            for thief_first in [true, false] {
                assert_eq!(
                    lockstep(thief_first, gap, 10),
                    Some(2),
                    "gap {gap} s, thief first: {thief_first}"
                );
            }
        }
    }

    #[test]
    fn a_lost_response_is_retried_however_late() {
        for late in [1, 29, 30, 600, 9_000] {
            let mut f = Family::new();
            let (_, lost) = f.present(0, 0);
            assert!(lost.is_some());
            let (d, kept) = f.present(0, late);
            assert!(accepted(d), "{late}: {d:?}");
            let (d, next) = f.present(kept.unwrap(), late + 1);
            assert!(matches!(d, Decision::Claim { .. }), "{d:?}");
            assert!(accepted(f.present(next.unwrap(), late + 2).0));
        }
    }

    #[test]
    fn concurrent_presentations_are_all_accepted_and_whichever_child_is_kept_works() {
        for kept in 0..3 {
            let mut f = Family::new();
            let children: Vec<_> = (0..3).map(|_| f.present(0, 5).1.unwrap()).collect();
            let (d, _) = f.present(children[kept], 6);
            assert!(matches!(d, Decision::Claim { .. }), "{d:?}");
        }
    }

    #[test]
    fn a_late_duplicate_of_the_parent_gets_a_live_child_even_after_the_user_moved_on() {
        // Tab A refreshes twice; tab B's request with the first token arrives late, within the
        // window. The browser keeps B's cookie (the last Set-Cookie): it must work.
        let mut f = Family::new();
        let (_, a1) = f.present(0, 0);
        let (_, a2) = f.present(a1.unwrap(), 1);
        assert!(a2.is_some());
        let (d, b) = f.present(0, 2);
        assert!(matches!(d, Decision::Repeat { .. }), "{d:?}");
        assert!(matches!(f.present(b.unwrap(), 3).0, Decision::Claim { .. }));
    }

    /// A family whose refreshes come with proofs by its DPoP key.
    fn bound() -> Family {
        let mut f = Family::new();
        f.state.bound = true;
        f
    }

    #[test]
    fn a_late_sibling_of_a_bound_session_claims_a_child_at_the_head() {
        // Tabs A and B present the parent; A's child arrives in the jar first and is used; B's
        // child arrives after that and is the jar's cookie now.
        let mut f = bound();
        let (_, a) = f.present(0, 0);
        let (d, b) = f.present(0, 1);
        assert!(matches!(d, Decision::Repeat { .. }), "{d:?}");
        let (_, a2) = f.present(a.unwrap(), 2);
        let (d, b2) = f.present(b.unwrap(), 3);
        // Generation 1 is `a`'s: `b` gets a child at the head + 1, as `a` did.
        assert_eq!(
            d,
            Decision::Claim {
                child_generation: 2
            }
        );
        assert_eq!(f.state.head, 1, "the head never moves back");
        // Both lines go on: whichever cookie the jar keeps works, and the session lives.
        assert!(accepted(f.present(b2.unwrap(), 4).0));
        assert!(accepted(f.present(a2.unwrap(), 5).0));
        assert!(!f.state.revoked);
    }

    #[test]
    fn a_late_sibling_of_a_bound_session_works_however_late_and_of_a_bearer_session_is_reuse() {
        // The jar presents it at the next expiry: ten minutes later.
        let mut f = bound();
        let (_, a) = f.present(0, 0);
        let (_, b) = f.present(0, 1);
        f.present(a.unwrap(), 2);
        assert!(matches!(
            f.present(b.unwrap(), 600).0,
            Decision::Claim { .. }
        ));
        assert!(!f.state.revoked);

        let mut f = Family::new();
        let (_, a) = f.present(0, 0);
        let (_, b) = f.present(0, 1);
        f.present(a.unwrap(), 2);
        assert_eq!(
            f.present(b.unwrap(), 3).0,
            Decision::Reuse,
            "Bearer: the strict rule"
        );
    }

    #[test]
    fn in_a_bound_session_a_superseded_claimer_after_its_window_is_still_reuse() {
        let mut f = bound();
        let (_, a) = f.present(0, 0);
        f.present(a.unwrap(), 10);
        assert_eq!(f.present(0, 40).0, Decision::Reuse);
    }

    #[test]
    fn a_revoked_token_of_a_bound_session_is_still_reuse() {
        let mut f = bound();
        let (_, a) = f.present(0, 0);
        // The child never arrives; 40 s later the parent is reissued and `a` is revoked.
        assert!(matches!(f.present(0, 40).0, Decision::Reissue { .. }));
        assert_eq!(f.present(a.unwrap(), 41).0, Decision::Reuse);
    }

    // ---- the plan: what each decision writes ----------------------------------------------

    fn rotate(plan: Plan) -> Rotate {
        match plan {
            Plan::Rotate(r) => r,
            other => panic!("expected a rotation, got {other:?}"),
        }
    }

    #[test]
    fn a_claim_writes_the_claim_raises_the_head_and_slides_the_idle_expiry() {
        let r = rotate(plan(fresh(4), live(3), 100, P, 50));
        assert_eq!(
            r,
            Rotate {
                revoke_generation: None,
                claim: true,
                head: 4,
                idle_expires_at: 150,
                child_generation: 5,
            }
        );
        // A late sibling of a bound session claims below the head: the head stays.
        let mut f = live(6);
        f.bound = true;
        let r = rotate(plan(fresh(4), f, 100, P, 50));
        assert_eq!((r.claim, r.head, r.child_generation), (true, 6, 7));
    }

    #[test]
    fn a_repeat_counts_a_child_and_leaves_the_claim_and_the_head() {
        let r = rotate(plan(claimed(4, 90, 1), live(6), 100, P, 50));
        assert_eq!(
            (r.claim, r.revoke_generation, r.head, r.child_generation),
            (false, None, 6, 7)
        );
    }

    #[test]
    fn a_reissue_revokes_the_unused_children_first_and_claims_again() {
        let r = rotate(plan(claimed(4, 0, 3), live(4), 100, P, 50));
        assert_eq!(
            (r.revoke_generation, r.claim, r.head, r.child_generation),
            (Some(5), true, 4, 5)
        );
    }

    #[test]
    fn the_idle_expiry_never_passes_the_absolute_one() {
        let mut f = live(3);
        f.absolute_expires_at = 120;
        assert_eq!(rotate(plan(fresh(4), f, 100, P, 50)).idle_expires_at, 120);
        assert_eq!(
            rotate(plan(fresh(4), live(3), 100, P, i64::MAX)).idle_expires_at,
            20_000
        );
    }

    #[test]
    fn reuse_revokes_and_refusals_write_nothing() {
        assert_eq!(plan(fresh(2), live(4), 0, P, 50), Plan::Revoke);
        let mut dead = live(4);
        dead.revoked = true;
        assert_eq!(plan(fresh(5), dead, 0, P, 50), Plan::Invalid);
        assert_eq!(
            plan(claimed(4, 100, 3), live(4), 110, P, 50),
            Plan::Throttled { retry_after: 20 }
        );
    }
}
