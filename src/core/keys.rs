//! The DPoP key's lifecycle (RFC 9449): which key signs which request, and what happens to the
//! stored one. The driver holds the keys (non-extractable `CryptoKey`s) under slot numbers the
//! machine chooses, and keeps one in IndexedDB under the session's name so that a reload and
//! the other tabs sign with it; it carries out [`KeyOp`]s and signs with the slot a command
//! names. The rules:
//!
//! - each sign-in is signed by a new key, stored before it is used; if the server refuses the
//!   sign-in, the live key goes back in the store (unless another tab stored a newer one) and
//!   the session of the other tabs goes on;
//! - a sign-in by a key the caller brings (a redirect's, a second factor's) stores it only once
//!   the server takes it;
//! - the session's requests and proofs are signed by its key, loaded from the store when this
//!   tab has none yet (a reload, a token adopted from another tab);
//! - the tab that ends the session deletes the stored key, after its logout request took it
//!   (and a logout after the end signs with the ended key); a peer's logout or end only makes
//!   this tab forget its key (the ending tab may still be signing with it); a peer's sign-in
//!   makes it load the new one at once.

use super::{Command, Id, KeyOp, Machine, Slot};

impl Machine {
    fn key_op(&mut self, op: KeyOp, slot: Slot, with: f64) {
        self.out.push(Command::Key { op, slot, with });
    }

    fn free(&mut self, slot: Option<Slot>) {
        if let Some(slot) = slot {
            self.key_op(KeyOp::Free, slot, 0.0);
        }
    }

    /// The key the session signs with: the one this tab holds, or else the stored one.
    pub(super) fn signing_key(&mut self) -> Option<Slot> {
        if self.config.dpop && self.key.is_none() {
            let slot = self.id();
            self.key_op(KeyOp::Load, slot, 0.0);
            self.key = Some(slot);
        }
        self.key
    }

    /// A sign-in's key: the one `caller` brings (`given`) or a new one.
    pub(super) fn login_key(&mut self, caller: Id, given: bool) -> Option<Slot> {
        if !self.config.dpop {
            return None;
        }
        let slot = self.id();
        let op = if given { KeyOp::Given } else { KeyOp::New };
        self.key_op(op, slot, f64::from(caller));
        Some(slot)
    }

    /// The server took the sign-in signed by `key`: the session's key from now on.
    pub(super) fn signed_in_with(&mut self, key: Option<Slot>) {
        if key.is_some() {
            self.forget_keys();
            self.key = key;
        }
    }

    /// The sign-in signed by `key` failed: a new key stored for it gives way to the live one.
    pub(super) fn sign_in_failed(&mut self, key: Option<Slot>, given: bool) {
        if let (Some(slot), false, Some(live)) = (key, given, self.key) {
            self.key_op(KeyOp::PutBack, slot, f64::from(live));
        }
        self.free(key);
    }

    /// A logout's key: the session's, or after an end here, the ended session's.
    pub(super) fn logout_key(&mut self, active: bool) -> Option<Slot> {
        match self.ended_key {
            Some(k) if !active => Some(k),
            _ => self.signing_key(),
        }
    }

    /// The session ended here at `now` (its logout request, if any, has its key already).
    pub(super) fn end_key(&mut self, now: f64) {
        if self.config.dpop {
            let ended = std::mem::replace(&mut self.ended_key, self.key.take());
            self.free(ended);
            self.key_op(KeyOp::Delete, 0, now);
        }
    }

    /// Another tab signed in or ended the session: this tab's keys are not the session's.
    pub(super) fn forget_keys(&mut self) {
        let (key, ended) = (self.key.take(), self.ended_key.take());
        self.free(key);
        self.free(ended);
    }
}
