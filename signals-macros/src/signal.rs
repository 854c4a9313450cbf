//! `#[derive(Signal)]`: parse the container attributes, validate, expand.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::visit_mut::{self, VisitMut};
use syn::{parse_quote, Data, DeriveInput, Error, Ident, Lifetime, Path, Type};

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
}

/// The arguments of `#[signal(...)]`.
#[derive(Default)]
struct Attrs {
    /// The context type as the user wrote it.
    context: Option<Type>,
    krate: Option<Path>,
    /// `asynchronous`: the signal may have `async fn` handlers.
    asynchronous: Option<Path>,
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
    Input {
        ident: &input.ident,
        generic,
        attrs,
        bound_context,
    }
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
                _ => Err(meta.error(format_args!(
                    "unknown `signal` argument `{}`; expected `context`, `asynchronous` or `crate`",
                    meta.path.to_token_stream()
                ))),
            }
        });
        errors.take(parsed);
    }
    attrs
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
    // `::` and the name follow the module path; the context's name follows the path.
    let path_suffix_len = 2 + name.len();
    let context_len = context_name.len();

    quote! {
        const _: () = {
            #private::register_signal! {
            static SIGNAL: #krate::SignalInfo = #krate::SignalInfo::__new::<#ident>(
                #private::concat!(#private::module_path!(), "::", #name, #context_name, #private::file!()),
                #private::module_path!().len() + #path_suffix_len,
                #context_len,
                #private::line!(),
                #asynchronous,
            );
            }

            static TABLE: #private::SignalTable = #private::SignalTable::new();

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
    let expansion = expand(&input);
    quote!(#error #expansion)
}
