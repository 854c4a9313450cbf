//! `#[derive(Signal)]`: parse the container attributes, validate, expand.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{parse_quote, Data, DeriveInput, Error, Fields, Ident, Lifetime, LitStr, Path, Type};

use crate::errors::Errors;
use crate::type_name::type_name;

/// The lifetime that stands for `'_` in the context type: `type Context<'ctx> = AppCtx<'ctx>`.
const CONTEXT_LIFETIME: &str = "'ctx";

/// A validated `#[derive(Signal)]` input.
struct Input<'a> {
    ident: &'a Ident,
    /// Whether the type has generic parameters (an error).
    generic: bool,
    attrs: Attrs,
    /// The context type with `'_` bound to the context lifetime, for `type Context<'ctx>`.
    bound_context: Option<Type>,
    /// For a periodic signal (`every` or `cron`): how its value is built from a tick.
    construct: Option<Construct>,
}

/// The arguments of `#[signal(...)]`.
#[derive(Default)]
struct Attrs {
    /// The context type as the user wrote it.
    context: Option<Type>,
    krate: Option<Path>,
    /// `asynchronous`: the signal may have `async fn` handlers.
    asynchronous: Option<Path>,
    /// `every = "1h"`: a periodic signal, in milliseconds.
    every: Option<(LitStr, u64)>,
    /// `cron = "0 3 * * *"`: a periodic signal on a cron schedule.
    cron: Option<LitStr>,
    /// `zone = "Europe/Paris"`: the time zone of `cron` (UTC without it).
    zone: Option<LitStr>,
}

/// How a periodic signal's value is built from its tick: the field the tick fills, the others
/// `Default::default()`.
enum Construct {
    /// `struct S;`
    Unit,
    /// Named fields: (each field, whether it is the tick, its type).
    Named(Vec<(Ident, bool, Type)>),
    /// Tuple fields: (whether each is the tick, its type).
    Tuple(Vec<(bool, Type)>),
}

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = parse(input, &mut errors);
    match errors.finish(()) {
        Ok(()) => expand(&parsed),
        Err(error) => fallback(parsed, error),
    }
}

/// Reads the input, recording every problem in `errors`.
fn parse<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Input<'a> {
    if let Data::Union(data) = &input.data {
        errors.push(Error::new_spanned(
            data.union_token,
            "`Signal` can't be derived for a union; use a struct or an enum",
        ));
    }
    let generic = !input.generics.params.is_empty() || input.generics.where_clause.is_some();
    if generic {
        errors.push(Error::new_spanned(
            &input.generics,
            "`Signal` can't be derived for a generic type: a signal is one concrete type with one handler table",
        ));
    }
    let attrs = parse_attrs(input, errors);
    let bound_context = attrs
        .context
        .as_ref()
        .map(|context| bind_context(context, errors));
    let construct = construct(input, &attrs, errors);
    Input {
        ident: &input.ident,
        generic,
        attrs,
        bound_context,
        construct,
    }
}

/// For a periodic signal, how its value is built from a tick; `#[signal(tick)]` on a field of
/// any other signal is an error.
fn construct(input: &DeriveInput, attrs: &Attrs, errors: &mut Errors) -> Option<Construct> {
    let periodic = attrs.every.is_some() || attrs.cron.is_some();
    let fields = match &input.data {
        Data::Struct(data) => Some(&data.fields),
        _ => None,
    };
    let mut ticks = Vec::new();
    for field in fields.into_iter().flatten() {
        for attr in field
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("signal"))
        {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("tick") {
                    ticks.push(meta.path.clone());
                    Ok(())
                } else {
                    Err(meta.error(format_args!(
                        "unknown `signal` argument `{}` on a field; expected `tick`",
                        meta.path.to_token_stream()
                    )))
                }
            });
            errors.take(parsed);
        }
    }
    if !periodic {
        if let Some(tick) = ticks.first() {
            errors.push(Error::new_spanned(
                tick,
                "`tick` is for periodic signals: add `every = \"1h\"` or `cron = \"0 3 * * *\"` to `#[signal(...)]`",
            ));
        }
        return None;
    }
    if let Some(extra) = ticks.get(1) {
        errors.push(Error::new_spanned(
            extra,
            "a periodic signal has one `tick` field",
        ));
    }
    let Some(fields) = fields else {
        let keyword = attrs
            .every
            .as_ref()
            .map(|(every, _)| every)
            .or(attrs.cron.as_ref());
        errors.push(Error::new_spanned(
            keyword,
            "a periodic signal is a struct: the worker builds it from its tick",
        ));
        return None;
    };
    let is_tick = |field: &syn::Field| {
        field.attrs.iter().any(|attr| {
            attr.path().is_ident("signal")
                && attr
                    .parse_nested_meta(|meta| match meta.path.is_ident("tick") {
                        true => Ok(()),
                        false => Err(meta.error("")),
                    })
                    .is_ok()
        })
    };
    Some(match fields {
        Fields::Unit => Construct::Unit,
        Fields::Named(named) => Construct::Named(
            named
                .named
                .iter()
                .map(|field| {
                    let name = field.ident.clone().expect("a named field");
                    (name, is_tick(field), field.ty.clone())
                })
                .collect(),
        ),
        Fields::Unnamed(unnamed) => Construct::Tuple(
            unnamed
                .unnamed
                .iter()
                .map(|field| (is_tick(field), field.ty.clone()))
                .collect(),
        ),
    })
}

fn parse_attrs(input: &DeriveInput, errors: &mut Errors) -> Attrs {
    let mut attrs = Attrs::default();
    for attr in input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("signal"))
    {
        let parsed = attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(Ident::unraw);
            match key.as_ref().map(Ident::to_string).as_deref() {
                Some("context") => {
                    let value = meta.value()?;
                    let context: Type = value.parse().map_err(|error| {
                        Error::new(
                            error.span(),
                            "`context` expects a type: `#[signal(context = AppCtx<'_>)]`",
                        )
                    })?;
                    set_once(&mut attrs.context, context, &meta.path, "context")
                }
                Some("crate") => {
                    let krate = meta.value()?.call(Path::parse_mod_style)?;
                    set_once(&mut attrs.krate, krate, &meta.path, "crate")
                }
                Some("asynchronous") => {
                    let flag = meta.path.clone();
                    set_once(&mut attrs.asynchronous, flag, &meta.path, "asynchronous")
                }
                Some("every") => {
                    let text: LitStr = meta.value()?.parse()?;
                    let millis = crate::duration::parse(&text.value()).ok_or_else(|| {
                        Error::new_spanned(
                            &text,
                            "expected a duration such as `\"1s\"`, `\"5m\"`, `\"1h\"` or `\"1d\"`",
                        )
                    })?;
                    if millis == 0 {
                        return Err(Error::new_spanned(&text, "`every` must be longer than zero"));
                    }
                    set_once(&mut attrs.every, (text, millis), &meta.path, "every")
                }
                Some("cron") => {
                    let text: LitStr = meta.value()?.parse()?;
                    check_cron(&text)?;
                    set_once(&mut attrs.cron, text, &meta.path, "cron")
                }
                Some("zone") => {
                    let text: LitStr = meta.value()?.parse()?;
                    set_once(&mut attrs.zone, text, &meta.path, "zone")
                }
                _ => Err(meta.error(format_args!(
                    "unknown `signal` argument `{}`; expected `context`, `asynchronous`, `every`, `cron`, `zone` or `crate`",
                    meta.path.to_token_stream()
                ))),
            }
        });
        errors.take(parsed);
    }
    if let (Some((every, _)), Some(_)) = (&attrs.every, &attrs.cron) {
        errors.push(Error::new_spanned(
            every,
            "a periodic signal has one schedule: `every` or `cron`, not both",
        ));
    }
    if let (Some(zone), None) = (&attrs.zone, &attrs.cron) {
        errors.push(Error::new_spanned(
            zone,
            "`zone` is the time zone of a `cron` schedule (an `every` counts from the Unix epoch): add `cron = \"...\"` or remove it",
        ));
    }
    attrs
}

/// The shape of a cron schedule: five fields (minute, hour, day of month, month, day of week),
/// six with seconds first, or a nickname (`@daily`). The worker parses it in full when it is
/// built.
fn check_cron(text: &LitStr) -> syn::Result<()> {
    let value = text.value();
    let fields = value.split_whitespace().count();
    let nickname = value.trim_start().starts_with('@') && fields == 1;
    match nickname || fields == 5 || fields == 6 {
        true => Ok(()),
        false => Err(Error::new_spanned(
            text,
            format_args!(
                "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; this one has {fields}: e.g. `\"0 3 * * *\"` (03:00 every day)"
            ),
        )),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Path, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(Error::new_spanned(
            key,
            format_args!("duplicate `signal` argument `{name}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// The context type with `'_` (or `'ctx`) bound to the context lifetime. It may borrow only
/// through those (or be `'static`): the signal type has no lifetime parameters that another
/// named lifetime could refer to, so other named lifetimes are errors.
fn bind_context(context: &Type, errors: &mut Errors) -> Type {
    let mut bound = context.clone();
    let mut rewrite = BindContextLifetime::default();
    rewrite.visit_type_mut(&mut bound);
    for lifetime in rewrite.named {
        errors.push(Error::new_spanned(
            &lifetime,
            format_args!(
                "the context type can't name the lifetime `{lifetime}`; write `'_` for what the context borrows"
            ),
        ));
    }
    bound
}

/// Rewrites a context type for `type Context<'ctx> = ...`: `'_` and elided reference
/// lifetimes become `'ctx`; other named lifetimes are collected as errors. Higher-ranked
/// positions (`fn(&T)`, `Fn(&T)`, `for<'a> ...`) are left alone.
#[derive(Default)]
struct BindContextLifetime {
    named: Vec<Lifetime>,
}

impl VisitMut for BindContextLifetime {
    fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
        match lifetime.ident.to_string().as_str() {
            // `'ctx` is what rustc suggests for a context type written without its lifetime
            // (`AppCtx` for `AppCtx<'a>`), since it is the only lifetime in scope there.
            "_" | "ctx" => *lifetime = Lifetime::new(CONTEXT_LIFETIME, lifetime.span()),
            "static" => {}
            _ => self.named.push(lifetime.clone()),
        }
    }

    fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
        match &mut reference.lifetime {
            Some(lifetime) => self.visit_lifetime_mut(lifetime),
            None => {
                let span = reference.and_token.span;
                reference.lifetime = Some(Lifetime::new(CONTEXT_LIFETIME, span));
            }
        }
        self.visit_type_mut(&mut reference.elem);
    }

    fn visit_type_fn_ptr_mut(&mut self, _: &mut syn::TypeFnPtr) {}

    fn visit_parenthesized_generic_arguments_mut(
        &mut self,
        _: &mut syn::ParenthesizedGenericArguments,
    ) {
    }

    fn visit_trait_bound_mut(&mut self, bound: &mut syn::TraitBound) {
        if bound.lifetimes.is_none() {
            visit_mut::visit_trait_bound_mut(self, bound);
        }
    }
}

fn expand(input: &Input) -> TokenStream {
    let ident = input.ident;
    let krate = match &input.attrs.krate {
        Some(krate) => krate.clone(),
        None => parse_quote!(::signals_core),
    };
    let private = quote!(#krate::__private);
    let (context, context_name) = match (&input.bound_context, &input.attrs.context) {
        (Some(bound), Some(written)) => (
            bound.to_token_stream(),
            type_name(written.to_token_stream()),
        ),
        _ => (quote!(()), "()".to_owned()),
    };
    let lifetime = Lifetime::new(CONTEXT_LIFETIME, Span::call_site());
    let asynchronous = input.attrs.asynchronous.is_some();
    let (dispatch, kind) = match asynchronous {
        true => (quote!(AsyncSignal), quote!(AsyncKind)),
        false => (quote!(SyncSignal), quote!(SyncKind)),
    };
    let name = ident.unraw().to_string();
    // `::` and the name follow the module path; the context's name follows the path, the
    // schedule follows the context.
    let path_suffix_len = 2 + name.len();
    let context_len = context_name.len();
    let schedule = schedule_text(&input.attrs);
    let schedule_len = schedule.len();
    let periodic = periodic(input);

    quote! {
        const _: () = {
            #private::register_signal! {
            static SIGNAL: #krate::SignalInfo = #krate::SignalInfo::__new::<#ident>(
                #private::concat!(#private::module_path!(), "::", #name, #context_name, #schedule, #private::file!()),
                #private::module_path!().len() + #path_suffix_len,
                #context_len,
                #schedule_len,
                #private::line!(),
                #asynchronous,
            );
            }

            static TABLE: #private::SignalTable = #private::SignalTable::new();

            #periodic

            #[automatically_derived]
            unsafe impl #krate::#dispatch for #ident {}

            #[automatically_derived]
            unsafe impl #krate::Signal for #ident {
                type Context<#lifetime> = #context;
                type __Kind = #private::#kind;

                #[inline]
                fn __info() -> &'static #krate::SignalInfo {
                    &SIGNAL
                }

                #[inline]
                fn __table() -> &'static #private::SignalTable {
                    &TABLE
                }

                #[inline]
                fn __debug(&self) -> #private::Option<#private::String> {
                    #[allow(unused_imports)]
                    use #private::{ViaDebug as _, ViaFallback as _};
                    (&#private::DebugProbe(self)).signals_debug()
                }
            }
        };
    }
}

/// A periodic signal's schedule as the catalog shows it: `every 1h`, `cron 0 3 * * * UTC`;
/// empty for any other signal.
fn schedule_text(attrs: &Attrs) -> String {
    match (&attrs.every, &attrs.cron) {
        (Some((every, _)), _) => format!("every {}", every.value().trim()),
        (None, Some(cron)) => {
            let zone = attrs.zone.as_ref().map_or("UTC".to_owned(), LitStr::value);
            format!("cron {} {zone}", cron.value().trim())
        }
        (None, None) => String::new(),
    }
}

/// For a periodic signal: how the worker builds it from a tick (`FromTick`), and its entry in
/// the queue's table of periodic signals, whose `periodic::<S>()` call (spanned at `every` or
/// `cron`) requires what firing it needs.
fn periodic(input: &Input) -> TokenStream {
    let Some(construct) = &input.construct else {
        return TokenStream::new();
    };
    let ident = input.ident;
    let queue = quote!(::signals_queue::__private);
    let tick = Ident::new("__tick", Span::mixed_site());
    // Spanned at the field's type: a type that can't hold the tick (`From<SystemTime>`) or
    // has no default is reported there.
    let value = |is_tick: bool, ty: &Type| {
        let span = ty.span();
        match is_tick {
            true => quote_spanned!(span=> #queue::tick_value::<#ty>(#tick)),
            false => quote_spanned!(span=> ::core::default::Default::default()),
        }
    };
    let build = match construct {
        Construct::Unit => quote!(#ident),
        Construct::Named(fields) => {
            let fields = fields.iter().map(|(name, is_tick, ty)| {
                let value = value(*is_tick, ty);
                quote!(#name: #value)
            });
            quote!(#ident { #(#fields),* })
        }
        Construct::Tuple(fields) => {
            let fields = fields.iter().map(|(is_tick, ty)| value(*is_tick, ty));
            quote!(#ident ( #(#fields),* ))
        }
    };
    let (spec, keyword_span) = match (&input.attrs.every, &input.attrs.cron) {
        (Some((every, millis)), _) => (quote!(#queue::ScheduleSpec::Every(#millis)), every.span()),
        (None, Some(cron)) => {
            let zone = input
                .attrs
                .zone
                .as_ref()
                .map_or("UTC".to_owned(), LitStr::value);
            // A macro of the queue's, so that without its `cron` feature the error is one,
            // at the pattern.
            let spec = crate::on::respan(quote!(::signals_queue::__cron!), cron.span());
            (quote!(#spec(#cron, #zone)), cron.span())
        }
        (None, None) => return TokenStream::new(),
    };
    let call = crate::on::respan(quote!(#queue::periodic::<#ident>), keyword_span);
    quote! {
        #[automatically_derived]
        impl #queue::FromTick for #ident {
            fn from_tick(#tick: ::std::time::SystemTime) -> Self {
                #build
            }
        }

        #[#queue::distributed_slice(#queue::PERIODIC)]
        #[linkme(crate = #queue::linkme)]
        static PERIODIC: #queue::PeriodicInfo = #call(#spec);
    }
}

/// The errors, plus an impl with a `()` context, so that uses of the type elsewhere do not
/// report a second, confusing "not a signal" error. Generic types get no impl: their uses fail
/// anyway.
fn fallback(mut input: Input, error: Error) -> TokenStream {
    let error = error.into_compile_error();
    if input.generic {
        return error;
    }
    input.attrs.context = None;
    input.bound_context = None;
    input.construct = None;
    input.attrs.every = None;
    input.attrs.cron = None;
    let expansion = expand(&input);
    quote!(#error #expansion)
}
