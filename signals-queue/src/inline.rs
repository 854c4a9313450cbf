//! The test kit's switch (feature `testing`): while a [`testing::Inline`](crate::testing::Inline)
//! guard lives on a thread, `notify` there runs queued handlers in place instead of writing
//! their jobs (the sync path's).

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<u32> = const { Cell::new(0) };
}

/// Whether queued handlers run inline on this thread.
pub(crate) fn active() -> bool {
    INLINE.with(Cell::get) > 0
}

/// One more guard on this thread.
pub(crate) fn enter() {
    INLINE.with(|inline| inline.set(inline.get() + 1));
}

/// One guard fewer on this thread.
pub(crate) fn leave() {
    INLINE.with(|inline| inline.set(inline.get().saturating_sub(1)));
}
