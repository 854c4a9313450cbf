//! Who reacts to the shop's signals. Nothing here is public: `#[on]` registers every handler
//! at link time, and the binary links this crate with `use shop_handlers as _;`.

mod audit;
mod billing;
mod email;

pub use billing::BillingError;
