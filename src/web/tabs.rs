//! Across tabs: a Web Lock around every refresh and a BroadcastChannel to hand the fresh token
//! to the other tabs and to tell them about logouts. What to adopt is the core's decision
//! (`Session::adopt`, `Session::end_if_older`); this file only moves messages and locks.
//! See docs/CROSS_TAB.md.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{BroadcastChannel, MessageEvent};

use super::js::{self, get, object};
use crate::core::Handoff;

pub struct Tabs {
    channel: BroadcastChannel,
    /// `navigator.locks` and its `request` method, where Web Locks exist.
    locks: Option<(JsValue, Function)>,
    name: JsValue,
    /// Owned so the handler lives as long as the channel; removed in `Drop`.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Drop for Tabs {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}

impl Tabs {
    /// `None` where BroadcastChannel is missing: the manager then works per tab.
    pub fn new(name: &str, on_message: impl FnMut(JsValue) + 'static) -> Option<Tabs> {
        let channel = BroadcastChannel::new(name).ok()?;
        let mut on_message = on_message;
        let handler =
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| on_message(e.data()));
        channel.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        let locks = get(&get(&js::global().into(), "navigator"), "locks");
        let request = get(&locks, "request").dyn_into::<Function>().ok();
        Some(Tabs {
            channel,
            locks: request.map(|r| (locks, r)),
            name: JsValue::from_str(name),
            _on_message: handler,
        })
    }

    fn post(&self, message: &JsValue) {
        let _ = self.channel.post_message(message);
    }

    pub fn post_token(&self, kind: &str, h: &Handoff) {
        self.post(&object(&[
            ("t", "token".into()),
            ("kind", kind.into()),
            ("token", h.token.as_str().into()),
            ("lifetime", h.lifetime_secs.into()),
            ("at", h.received_at_ms.into()),
        ]));
    }

    pub fn post_ask(&self) {
        self.post(&object(&[("t", "ask".into())]));
    }

    /// `logout`, or `ended` with a reason.
    pub fn post_end(&self, kind: &str, reason: Option<&str>, at_ms: f64) {
        self.post(&object(&[
            ("t", kind.into()),
            (
                "reason",
                reason.map_or(JsValue::UNDEFINED, JsValue::from_str),
            ),
            ("at", at_ms.into()),
        ]));
    }

    /// Runs `f` holding the refresh lock. `f(true)` when another tab held the lock first (its
    /// token is probably on its way); `f(false)` when the lock was free, or where Web Locks are
    /// missing. A closed or crashed tab's lock is released by the browser.
    pub async fn locked<T, F, Fut>(&self, f: F) -> Option<T>
    where
        T: 'static,
        F: FnOnce(bool) -> Fut + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let f = Rc::new(RefCell::new(Some(f)));
        let slot: Rc<RefCell<Option<T>>> = Rc::new(RefCell::new(None));
        let Some((locks, request)) = &self.locks else {
            let f = f.borrow_mut().take()?;
            return Some(f(false).await);
        };
        let callback = |contended: bool| {
            let (f, slot) = (f.clone(), slot.clone());
            Closure::once_into_js(move |lock: JsValue| -> Promise {
                // With ifAvailable, a null lock means another tab holds it.
                let Some(f) = (!lock.is_null()).then(|| f.borrow_mut().take()).flatten() else {
                    return Promise::resolve(&JsValue::FALSE);
                };
                future_to_promise(async move {
                    let out = f(contended).await;
                    *slot.borrow_mut() = Some(out);
                    Ok(JsValue::TRUE)
                })
            })
        };
        let first = request
            .call3(
                locks,
                &self.name,
                &object(&[("ifAvailable", JsValue::TRUE)]),
                &callback(false),
            )
            .ok()
            .and_then(|p| p.dyn_into::<Promise>().ok());
        let ran = match first {
            Some(p) => JsFuture::from(p).await.ok() == Some(JsValue::TRUE),
            None => false,
        };
        if !ran && f.borrow().is_some() {
            let second = request
                .call2(locks, &self.name, &callback(true))
                .ok()
                .and_then(|p| p.dyn_into::<Promise>().ok());
            if let Some(p) = second {
                let _ = JsFuture::from(p).await;
            }
        }
        // Locks refused (e.g. an opaque origin): go ahead unlocked rather than not at all.
        let pending = f.borrow_mut().take();
        if let Some(f) = pending {
            return Some(f(false).await);
        }
        slot.borrow_mut().take()
    }
}
