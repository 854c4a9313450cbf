//! Procedural macros of `signals-core`. Depend on `signals-core` and use them from there.

mod duration;
mod errors;
mod on;
mod signal;
mod type_name;

use proc_macro::TokenStream;

/// Makes a type a signal: implements `signals_core::Signal` and lists it in the catalog.
///
/// Works on structs (named, tuple and unit) and enums without generic parameters.
///
/// - `#[signal(context = Type)]` chooses what handlers receive besides the signal (default
///   `()`). Write `'_` for what the context borrows: `#[signal(context = AppCtx<'_>)]`.
/// - `#[signal(asynchronous)]` allows `async fn` handlers; the signal is then notified with
///   `notify_async(...).await` (the sync `notify` of it does not compile).
/// - `#[signal(crate = path)]` names this crate when a framework re-exports it.
///
/// # Examples
///
/// ```
/// use signals_core::Signal;
///
/// pub struct AppCtx<'a> {
///     pub db: &'a mut Vec<String>,
/// }
///
/// #[derive(Signal)]
/// #[signal(context = AppCtx<'_>)]
/// pub struct OrderCreated {
///     pub order_id: u64,
/// }
///
/// #[derive(Signal)]
/// pub enum Payment {
///     Captured { amount: u64 },
///     Refunded,
/// }
/// ```
#[proc_macro_derive(Signal, attributes(signal))]
pub fn derive_signal(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    signal::derive(&input).into()
}

/// Registers a function as a handler of a signal: `#[on(Signal)]`, `#[on(Signal, priority = N)]`.
///
/// The function (sync, or `async fn` for an asynchronous signal) takes the signal by reference
/// and, optionally, the signal's context as `&Ctx` or `&mut Ctx`; it returns `()` or
/// `Result<(), E>` where `E` converts into `Box<dyn Error + Send + Sync>`. It stays an ordinary
/// function. Arguments after the signal:
///
/// - `priority = N`: an `i32` constant expression, default 0; higher runs first.
/// - `when = filter`: runs the handler only if `filter(&signal)` (or `filter(&signal, &ctx)`)
///   returns `true`; a closure needs no parameter types (`when = |o| o.total > 100`).
/// - `after = other` / `before = other` (repeatable): `other` is a handler function of the same
///   signal, by its path from here, that must run before / after this one. The path is checked
///   by rustc; whether `other` has `#[on]` for this signal is checked by
///   `signals_core::check_order()` and at the signal's `notify`.
/// - `crate = path`: names this crate when a framework re-exports it.
///
/// # Examples
///
/// ```
/// use signals_core::{notify, on, Signal};
///
/// #[derive(Signal)]
/// #[signal(context = Vec<u64>)]
/// pub struct OrderCreated {
///     pub order_id: u64,
/// }
///
/// #[on(OrderCreated, priority = 10)]
/// fn reserve_stock(sig: &OrderCreated, reserved: &mut Vec<u64>) -> Result<(), std::io::Error> {
///     reserved.push(sig.order_id);
///     Ok(())
/// }
///
/// #[on(OrderCreated)]
/// fn log_order(sig: &OrderCreated) {
///     println!("order {} created", sig.order_id);
/// }
///
/// let mut reserved = Vec::new();
/// notify(&OrderCreated { order_id: 1 }, &mut reserved)?;
/// assert_eq!(reserved, [1]);
/// # Ok::<(), signals_core::Error>(())
/// ```
#[proc_macro_attribute]
pub fn on(args: TokenStream, item: TokenStream) -> TokenStream {
    on::expand(args.into(), item.into()).into()
}
