//! `#[on(Signal, priority = N)]`: parse the arguments and the handler, validate, expand.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{
    parse_quote, Attribute, Error, Expr, FnArg, GenericParam, Ident, Pat, Path, ReturnType,
    Signature, Token, Type, Visibility,
};

use crate::errors::Errors;
use crate::type_name::{source_text, type_name};

/// The arguments of `#[on(...)]`.
struct Args {
    signal: Type,
    priority: Option<Expr>,
    /// `when = filter`: `fn(&S) -> bool` or `fn(&S, &Ctx) -> bool`.
    when: Option<Expr>,
    /// `after = handler`, repeatable: handlers of the same signal this one runs after.
    after: Vec<Path>,
    /// `before = handler`, repeatable: handlers of the same signal this one runs before.
    before: Vec<Path>,
    krate: Option<Path>,
    /// `queue` or `queue = "name"`: `notify` writes a job; a worker runs the handler later.
    queue: Option<Queue>,
    /// `max_attempts = N` of a queued handler.
    max_attempts: Option<Expr>,
    /// `name = "stable-id"` of a queued handler: the name its jobs carry.
    name: Option<syn::LitStr>,
    /// `timeout = "30s"` of a queued handler: how long an attempt may run, in milliseconds.
    timeout: Option<(syn::LitStr, u64)>,
    /// `delay = "3d"` of a queued handler: how long after the notify its job is due, in
    /// milliseconds.
    delay: Option<(syn::LitStr, u64)>,
    /// `coalesce = field` or `coalesce = |s| key` of a queued handler: a job not yet started
    /// with the same key absorbs the next `notify`.
    coalesce: Option<Coalesce>,
}

/// `coalesce = product_id` (a field of the signal, or a path of fields), or
/// `coalesce = |s| expression` (a closure of the signal).
enum Coalesce {
    Field(Expr),
    Closure(syn::ExprClosure),
}

impl Coalesce {
    fn parse(expr: Expr) -> syn::Result<Coalesce> {
        fn is_field(expr: &Expr) -> bool {
            match expr {
                Expr::Path(path) => path.qself.is_none() && path.path.get_ident().is_some(),
                Expr::Field(field) => is_field(&field.base),
                _ => false,
            }
        }
        match expr {
            Expr::Closure(closure) if closure.inputs.len() == 1 => Ok(Coalesce::Closure(closure)),
            expr if is_field(&expr) => Ok(Coalesce::Field(expr)),
            expr => Err(Error::new_spanned(
                expr,
                "`coalesce` takes a field of the signal (`coalesce = product_id`) or a closure of it (`coalesce = |s| s.product_id`)",
            )),
        }
    }

    fn tokens(&self) -> TokenStream {
        match self {
            Coalesce::Field(expr) => expr.to_token_stream(),
            Coalesce::Closure(closure) => closure.to_token_stream(),
        }
    }

    /// The key of `__signal`: `coalesce_key(&__signal.field)` or
    /// `coalesce_with(__signal, closure)` (whose bound gives the closure its parameter's type),
    /// located at the user's expression so that a key that is not `Display` is reported there.
    fn key(&self, queue_crate: &TokenStream) -> TokenStream {
        let span = self.tokens().span();
        let signal = Ident::new("__signal", Span::mixed_site().located_at(span));
        let (function, args) = match self {
            Coalesce::Field(expr) => {
                let access = prefix_field(expr, &signal);
                (quote!(coalesce_key), respan(quote!(&#access), span))
            }
            Coalesce::Closure(closure) => (quote!(coalesce_with), quote!(#signal, #closure)),
        };
        let function = respan(quote!(#queue_crate::#function), span);
        let mut args = Group::new(Delimiter::Parenthesis, args);
        args.set_span(span);
        quote!(#function #args)
    }
}

/// `a.b` read on `signal`: `signal.a.b`.
fn prefix_field(expr: &Expr, signal: &Ident) -> TokenStream {
    match expr {
        Expr::Field(field) => {
            let base = prefix_field(&field.base, signal);
            let member = &field.member;
            quote!(#base.#member)
        }
        Expr::Path(path) => {
            let ident = path.path.get_ident().expect("checked in `Coalesce::parse`");
            quote!(#signal.#ident)
        }
        _ => unreachable!("checked in `Coalesce::parse`"),
    }
}

/// `queue`, `queue = "name"` or `publish = "subject"`.
struct Queue {
    /// The `queue` (or `publish`) keyword: errors about what queuing requires point here.
    keyword: Ident,
    /// The queue's name (`"default"` when bare), or the subject.
    name: String,
    /// `publish = "subject"`: the function returns a message, which a relay publishes.
    publish: bool,
}

/// The arguments `on` accepts after the signal, for messages.
const ARGUMENTS: &str =
    "`priority`, `when`, `after`, `before`, `queue`, `publish`, `max_attempts`, `timeout`, `delay`, `coalesce`, `name` or `crate`";

/// The function `#[on]` is on: its attributes and signature, parsed; its body kept as tokens,
/// never parsed (it is the user's, re-emitted untouched, and parsing it costs compile time).
struct HandlerFn {
    attrs: Vec<Attribute>,
    sig: Signature,
}

impl Parse for HandlerFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let sig: Signature = input.parse()?;
        let body: Group = input.parse()?;
        if body.delimiter() != Delimiter::Brace || !input.is_empty() {
            return Err(Error::new(body.span(), "expected a function body"));
        }
        Ok(HandlerFn { attrs, sig })
    }
}

/// A validated handler function.
struct Handler<'a> {
    ident: &'a Ident,
    /// `async fn`: registered with an async thunk, for asynchronous signals only.
    asyncness: Option<&'a Token![async]>,
    /// The type of the signal parameter, `&S`.
    signal_param: &'a Type,
    /// The type of the context parameter, `&Ctx` or `&mut Ctx`, if the handler takes one.
    context_param: Option<&'a Type>,
    output: &'a ReturnType,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let handler_fn = match syn::parse2::<HandlerFn>(item.clone()) {
        Ok(handler_fn) => handler_fn,
        Err(_) => {
            let error = Error::new_spanned(
                first_tokens(&item),
                "`#[on]` goes on a free function: `fn handler(signal: &Signal, ctx: &mut Context)`",
            );
            let error = error.into_compile_error();
            return quote!(#error #item);
        }
    };
    let mut errors = Errors::default();
    let args = errors.take(Args::parse.parse2(args));
    let handler = errors.take(validate(&handler_fn, args.as_ref()));
    if let Some(args) = &args {
        errors.take(not_repeated(&handler_fn, args));
    }
    match (errors.finish(()), args, handler) {
        (Ok(()), Some(args), Some(handler)) => {
            let registration = register(&args, &handler);
            quote!(#item #registration)
        }
        (result, _, _) => {
            let error = result.err().map(Error::into_compile_error);
            quote!(#error #item)
        }
    }
}

/// An error if another `#[on]` on the same function names the same signal.
fn not_repeated(handler_fn: &HandlerFn, args: &Args) -> syn::Result<()> {
    let signal = args.signal.to_token_stream().to_string();
    for attr in &handler_fn.attrs {
        let is_on = attr.path().segments.last().is_some_and(|s| s.ident == "on");
        let Ok(list) = attr.meta.require_list() else {
            continue;
        };
        let other = list.parse_args_with(|input: ParseStream| {
            let signal: Type = input.parse()?;
            input.parse::<TokenStream>()?;
            Ok(signal)
        });
        if is_on && other.is_ok_and(|other| other.to_token_stream().to_string() == signal) {
            return Err(Error::new_spanned(
                attr,
                format_args!(
                    "`{}` already has `#[on({signal})]`: a function handles a signal once; remove one",
                    handler_fn.sig.ident
                ),
            ));
        }
    }
    Ok(())
}

/// The item's leading tokens (attributes aside), so that an error does not cover a whole body.
fn first_tokens(item: &TokenStream) -> TokenStream {
    item.clone()
        .into_iter()
        .filter(|token| !matches!(token, TokenTree::Punct(p) if p.as_char() == '#'))
        .filter(
            |token| !matches!(token, TokenTree::Group(g) if g.delimiter() == Delimiter::Bracket),
        )
        .take(2)
        .collect()
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(Error::new(
                Span::call_site(),
                "`#[on]` needs the signal it handles: `#[on(OrderCreated)]`",
            ));
        }
        let signal: Type = input.parse()?;
        let mut args = Args {
            signal,
            priority: None,
            when: None,
            after: Vec::new(),
            before: Vec::new(),
            krate: None,
            queue: None,
            max_attempts: None,
            name: None,
            timeout: None,
            delay: None,
            coalesce: None,
        };
        let mut errors = Errors::default();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            errors.take(args.parse_named(input));
        }
        errors.finish(args)
    }
}

impl Args {
    /// One `key = value` argument after the signal.
    fn parse_named(&mut self, input: ParseStream) -> syn::Result<()> {
        let expected =
            format!("`#[on]` handles one signal; after it, expected {ARGUMENTS} as `name = value`");
        let key = input
            .call(Ident::parse_any)
            .map_err(|error| Error::new(error.span(), &expected))?;
        if key == "queue" && (input.is_empty() || input.peek(Token![,])) {
            let queue = Queue {
                keyword: key.clone(),
                name: "default".to_owned(),
                publish: false,
            };
            return self.set_queue(queue);
        }
        if !input.peek(Token![=]) {
            skip_value(input)?;
            return Err(Error::new_spanned(&key, &expected));
        }
        input.parse::<Token![=]>()?;
        match key.unraw().to_string().as_str() {
            "priority" => {
                let priority = input.parse()?;
                set_once(&mut self.priority, priority, &key)
            }
            "when" => {
                let when = input.parse()?;
                set_once(&mut self.when, when, &key)
            }
            "after" => {
                self.after.push(input.parse()?);
                Ok(())
            }
            "before" => {
                self.before.push(input.parse()?);
                Ok(())
            }
            "crate" => {
                let krate = input.call(Path::parse_mod_style)?;
                set_once(&mut self.krate, krate, &key)
            }
            "queue" => {
                let name: syn::LitStr = input.parse()?;
                if name.value().is_empty() || name.value().len() > 255 {
                    return Err(Error::new_spanned(
                        &name,
                        "a queue's name is 1 to 255 bytes: `queue = \"email\"`",
                    ));
                }
                let queue = Queue {
                    keyword: key.clone(),
                    name: name.value(),
                    publish: false,
                };
                self.set_queue(queue)
            }
            "publish" => {
                let subject: syn::LitStr = input.parse()?;
                let value = subject.value();
                if value.is_empty()
                    || value.len() > 255
                    || value.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
                {
                    return Err(Error::new_spanned(
                        &subject,
                        "a subject is 1 to 255 bytes of dot-separated tokens, without spaces or wildcards: `publish = \"shop.orders.created\"`",
                    ));
                }
                self.set_queue(Queue {
                    keyword: key.clone(),
                    name: value,
                    publish: true,
                })
            }
            "max_attempts" => {
                let max_attempts = input.parse()?;
                set_once(&mut self.max_attempts, max_attempts, &key)
            }
            "name" => {
                let name = input.parse()?;
                set_once(&mut self.name, name, &key)
            }
            "coalesce" => {
                let coalesce = Coalesce::parse(input.parse()?)?;
                set_once(&mut self.coalesce, coalesce, &key)
            }
            "timeout" | "delay" => {
                let text: syn::LitStr = input.parse()?;
                let millis = crate::duration::parse(&text.value()).ok_or_else(|| {
                    Error::new_spanned(
                        &text,
                        "expected a duration such as `\"30s\"`, `\"500ms\"`, `\"5m\"` or `\"1h 30m\"`",
                    )
                })?;
                if millis == 0 {
                    return Err(Error::new_spanned(
                        &text,
                        format_args!("a `{key}` must be longer than zero"),
                    ));
                }
                match key.to_string().as_str() {
                    "timeout" => set_once(&mut self.timeout, (text, millis), &key),
                    _ => set_once(&mut self.delay, (text, millis), &key),
                }
            }
            _ => {
                skip_value(input)?;
                Err(Error::new_spanned(
                    &key,
                    format_args!("unknown `on` argument `{key}`; expected {ARGUMENTS}"),
                ))
            }
        }
    }
}

impl Args {
    /// `queue` and `publish` exclude each other, and each is given once.
    fn set_queue(&mut self, queue: Queue) -> syn::Result<()> {
        match &self.queue {
            Some(first) if first.publish != queue.publish => Err(Error::new_spanned(
                &queue.keyword,
                "`queue` and `publish` can't be combined: `publish` already writes a job that a relay publishes after commit",
            )),
            _ => {
                let key = queue.keyword.clone();
                set_once(&mut self.queue, queue, &key)
            }
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Ident) -> syn::Result<()> {
    if slot.is_some() {
        return Err(Error::new_spanned(
            key,
            format_args!("duplicate `on` argument `{key}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// Skips an unknown argument's value, up to the next top-level comma.
fn skip_value(input: ParseStream) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}

fn validate<'a>(item: &'a HandlerFn, args: Option<&Args>) -> syn::Result<Handler<'a>> {
    let sig = &item.sig;
    let mut errors = Errors::default();
    if let syn::Safety::Unsafe(unsafety) = sig.safety {
        errors.push(Error::new_spanned(
            unsafety,
            "`#[on]` handler can't be `unsafe fn`: `notify` calls it from safe code",
        ));
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Lifetime(_)) {
            errors.push(Error::new_spanned(
                param,
                "`#[on]` handler can't be generic: it is registered for one concrete signal",
            ));
        }
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(Error::new_spanned(
            variadic,
            "`#[on]` handler can't be variadic",
        ));
    }
    let signal_name = args.map_or_else(|| quote!(S), |args| args.signal.to_token_stream());
    if let Some(args) = args {
        validate_queue(args, sig, &mut errors);
    }
    let mut params = sig.inputs.iter();
    let signal_param = errors.take(signal_param(sig, params.next(), &signal_name));
    let context_param = params
        .next()
        .and_then(|param| errors.take(context_param(param)));
    if let Some(extra) = params.next() {
        errors.push(Error::new_spanned(
            extra,
            "`#[on]` handler takes at most two parameters: the signal `&S` and the context `&Ctx` or `&mut Ctx`",
        ));
    }
    let signal_param = errors.finish(signal_param)?;
    Ok(Handler {
        ident: &sig.ident,
        asyncness: sig.asyncness.as_ref(),
        signal_param: signal_param.expect("a missing signal parameter is reported above"),
        context_param,
        output: &sig.output,
    })
}

/// `max_attempts` and `name` need `queue` (or `publish`); a publishing function returns its
/// message and is not `async`.
fn validate_queue(args: &Args, sig: &Signature, errors: &mut Errors) {
    if let Some(queue) = args.queue.as_ref().filter(|queue| queue.publish) {
        if let Some(asyncness) = &sig.asyncness {
            errors.push(Error::new_spanned(
                asyncness,
                "a publishing function can't be `async fn`: `notify` calls it and writes the message it returns",
            ));
        }
        if let ReturnType::Default = sig.output {
            errors.push(Error::new_spanned(
                &queue.keyword,
                format_args!(
                    "a publishing function returns the message: `fn {}(sig: &Signal) -> Message`",
                    sig.ident
                ),
            ));
        }
    }
    if args.queue.is_none() {
        if let Some(max_attempts) = &args.max_attempts {
            errors.push(Error::new_spanned(
                max_attempts,
                "`max_attempts` is for queued and publishing handlers: add `queue` (`#[on(S, queue, max_attempts = 5)]`)",
            ));
        }
        if let Some(name) = &args.name {
            errors.push(Error::new_spanned(
                name,
                "`name` is for queued handlers: add `queue` (`#[on(S, queue, name = \"...\")]`)",
            ));
        }
    }
    let publishes = args.queue.as_ref().is_none_or(|queue| queue.publish);
    if let Some((timeout, _)) = args.timeout.as_ref().filter(|_| publishes) {
        errors.push(Error::new_spanned(
            timeout,
            "`timeout` is for queued handlers: add `queue` (`#[on(S, queue, timeout = \"30s\")]`)",
        ));
    }
    if let Some((delay, _)) = args.delay.as_ref().filter(|_| publishes) {
        errors.push(Error::new_spanned(
            delay,
            "`delay` is for queued handlers: add `queue` (`#[on(S, queue, delay = \"3d\")]`)",
        ));
    }
    if let Some(coalesce) = args.coalesce.as_ref().filter(|_| publishes) {
        errors.push(Error::new_spanned(
            coalesce.tokens(),
            "`coalesce` is for queued handlers: add `queue` (`#[on(S, queue, coalesce = product_id)]`)",
        ));
    }
}

fn typed_param(param: &FnArg) -> syn::Result<&Type> {
    match param {
        FnArg::Typed(typed) => Ok(&typed.ty),
        FnArg::Receiver(receiver) => Err(Error::new_spanned(
            receiver,
            "`#[on]` handler can't take `self`; register a free function",
        )),
    }
}

fn signal_param<'a>(
    sig: &syn::Signature,
    param: Option<&'a FnArg>,
    signal_name: &TokenStream,
) -> syn::Result<&'a Type> {
    let Some(param) = param else {
        return Err(Error::new(
            sig.paren_token.span.join(),
            format_args!(
                "`#[on]` handler takes the signal by reference: `fn {}(signal: &{signal_name})`",
                sig.ident
            ),
        ));
    };
    let ty = typed_param(param)?;
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => Ok(ty),
        _ => Err(Error::new_spanned(
            ty,
            format_args!("`#[on]` handler takes the signal by reference: `&{signal_name}`"),
        )),
    }
}

fn context_param(param: &FnArg) -> syn::Result<&Type> {
    let ty = typed_param(param)?;
    match ty {
        Type::Reference(_) => Ok(ty),
        _ => Err(Error::new_spanned(
            ty,
            "`#[on]` handler takes the context by reference: `&Ctx` or `&mut Ctx`",
        )),
    }
}

/// The `HandlerInfo` static that puts the handler into the program's handler table, and one
/// `OrderConstraint` per `after`/`before`.
///
/// They sit in a `const` named after the handler and its signal rather than `const _`: inside
/// an `impl` (where `#[on]` cannot work, having no name for `Self`'s type) a named `const` is a
/// valid associated item, so the only error left is rustc's "cannot find value `handler`",
/// naming the function (every use of the function below is in value position, at its name, so
/// rustc reports it once).
fn register(args: &Args, handler: &Handler) -> TokenStream {
    let krate = match &args.krate {
        Some(krate) => krate.clone(),
        None => parse_quote!(::signals_core),
    };
    let private = quote!(#krate::__private);
    let signal = &args.signal;
    let ident = handler.ident;
    let name = ident.unraw().to_string();
    // `::` and the function's name follow the module path.
    let name_suffix_len = 2 + name.len();
    let filter_text = args.when.as_ref().map_or_else(String::new, filter_text);
    let filter_len = filter_text.len();
    let queue_name = args.queue.as_ref().map_or("", |queue| &queue.name);
    let queue_len = queue_name.len();
    let priority = match &args.priority {
        Some(priority) => priority.to_token_stream(),
        None => quote!(0),
    };
    let function = quote!(#private::function_id(&#ident));
    let (new, thunk, job) = match &args.queue {
        Some(queue) => {
            let new = respan(
                quote!(#private::queued_handler_info::<#signal>),
                signal.span(),
            );
            let (thunk, job) = queued(args, queue, handler, &function, &priority, &private);
            (new, thunk, job)
        }
        None => {
            let new = match handler.asyncness {
                Some(_) => quote!(#private::async_handler_info),
                None => quote!(#private::handler_info),
            };
            let new = turbofish(new, signal);
            let thunk = thunk(signal, args.when.as_ref(), handler, &private);
            (new, thunk, TokenStream::new())
        }
    };
    let constraints = args
        .after
        .iter()
        .map(|other| (other, true))
        .chain(args.before.iter().map(|other| (other, false)))
        .enumerate()
        .map(|(i, (other, after))| {
            let other_id = respan(
                quote!(#private::handler_id::<#signal, _, _>(&#other)),
                other.span(),
            );
            let other_text = type_name(other.to_token_stream());
            let name = format_ident!("ORDER_{}", i);
            quote! {
                #private::register! {
                    ORDER,
                    static #name: #private::OrderConstraint =
                        #private::OrderConstraint::__new::<#signal>(#function, #other_id, #other_text, #after);
                }
            }
        });
    let scope = scope_ident(ident, signal);
    // The call `new(spec, thunk)` spans the signal's path, as its closure does: the signal's
    // bound and the thunk's `Context` projection then fail at one span, reported once.
    let mut call_args = Group::new(
        Delimiter::Parenthesis,
        quote! {
            #private::HandlerSpec {
                text: #private::concat!(#private::module_path!(), "::", #name, #filter_text, #queue_name, #private::file!()),
                split: #private::TextSplit {
                    name_len: #private::module_path!().len() + #name_suffix_len,
                    filter_len: #filter_len,
                    queue_len: #queue_len,
                },
                priority: #priority,
                line: #private::line!(),
                function: #function,
            },
            #thunk,
        },
    );
    call_args.set_span(last_token_span(signal));
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, non_upper_case_globals)]
        const #scope: () = {
            #(#constraints)*
            #job

            #private::register! {
                HANDLERS,
                static __SIGNALS_HANDLER: #krate::HandlerInfo = #new #call_args;
            }
        };
    }
}

/// For `#[on(S, queue)]`: the thunk `notify` runs in the handler's place (it writes the job,
/// if the filter accepts), and the job's registration with the worker's adapter for the
/// handler. Requirements of queuing (a serializable signal, a context that can enqueue and be
/// built on the worker) are checked at the `queue` keyword.
fn queued(
    args: &Args,
    queue: &Queue,
    handler: &Handler,
    function: &TokenStream,
    priority: &TokenStream,
    private: &TokenStream,
) -> (TokenStream, TokenStream) {
    let queue_crate = quote!(::signals_queue::__private);
    let signal = &args.signal;
    let span = queue.keyword.span();
    let context = quote!(<#signal as #private::Signal>::Context);
    let param = |name: &str| Ident::new(name, Span::mixed_site());
    let (signal_param, context_param) = (param("__signal"), param("__context"));
    let accepts = args.when.as_ref().map(|when| {
        let accepted = accepts(signal, when, private);
        quote! {
            fn accepts(#signal_param: &#signal, #context_param: &#context<'_>) -> bool {
                #accepted
            }
        }
    });
    let call = match queue.publish {
        true => message(handler, &queue_crate),
        false => call(handler, private),
    };
    let call = match (queue.publish, handler.asyncness) {
        (true, _) => quote! {
            fn message(
                #signal_param: &#signal,
                #context_param: &#context<'_>,
            ) -> #private::Option<#private::Result<#private::String, #private::BoxError>> {
                #private::Option::Some(#call)
            }
        },
        (false, None) => quote! {
            fn call(
                #signal_param: &#signal,
                #context_param: &mut #context<'_>,
            ) -> #private::Result<(), #private::BoxError> {
                #call
            }
        },
        (false, Some(asyncness)) => {
            let require = respan(
                quote!(#queue_crate::require_async::<#signal>),
                asyncness.span,
            );
            quote! {
                fn call_async<'a, 'c: 'a>(
                    #signal_param: &'a #signal,
                    #context_param: &'a mut #context<'c>,
                ) -> #private::HandlerFuture<'a> {
                    const { #require() };
                    #private::HandlerFuture::from_or_box(async move { #call })
                }
            }
        }
    };
    let coalesce = args.coalesce.as_ref().map(|coalesce| {
        let key = coalesce.key(&queue_crate);
        let signal_param = Ident::new("__signal", Span::mixed_site());
        quote! {
            fn coalesce(#signal_param: &#signal) -> #private::Option<#private::String> {
                #private::Option::Some(#key)
            }
        }
    });
    let publish = queue.publish;
    let thunk = quote!(__SIGNALS_QUEUED.0, #publish);
    let ident = handler.ident;
    let name = ident.unraw().to_string();
    let job_name = match &args.name {
        Some(name) => name.to_token_stream(),
        None => quote!(#private::concat!(#private::module_path!(), "::", #name)),
    };
    // A publishing function's message waits for the broker as long as it takes (a relay's
    // `max_age` bounds it); a queued handler gets 25 attempts.
    let max_attempts = match (&args.max_attempts, queue.publish) {
        (Some(max_attempts), _) => max_attempts.to_token_stream(),
        (None, true) => quote!(2147483647),
        (None, false) => quote!(25),
    };
    let timeout_ms = args.timeout.as_ref().map_or(0, |(_, millis)| *millis);
    let delay_ms = args.delay.as_ref().map_or(0, |(_, millis)| *millis);
    let queue_name = &queue.name;
    let parts = match queue.publish {
        true => quote!(published),
        false => quote!(queued),
    };
    let queued = respan(
        quote!(#queue_crate::#parts::<#signal, __SignalsJob>()),
        span,
    );
    let job = quote! {
        struct __SignalsJob;

        impl #queue_crate::Handler<#signal> for __SignalsJob {
            const JOB: &'static #queue_crate::JobInfo = &__SIGNALS_JOB;
            #accepts
            #coalesce
            #call
        }

        const __SIGNALS_QUEUED: (#private::QueuedThunk<#signal>, #queue_crate::Run) = #queued;

        #[#queue_crate::distributed_slice(#queue_crate::JOBS)]
        #[linkme(crate = #queue_crate::linkme)]
        static __SIGNALS_JOB: #queue_crate::JobInfo = #queue_crate::JobInfo::new(#queue_crate::JobSpec {
            name: #job_name,
            queue: #queue_name,
            max_attempts: #max_attempts,
            priority: #priority,
            timeout_ms: #timeout_ms,
            delay_ms: #delay_ms,
            function: #function,
            file: #private::file!(),
            line: #private::line!(),
        }, __SIGNALS_QUEUED.1);
    };
    (thunk, job)
}

/// A publishing function called with `__signal` (and `__context`), its message as JSON:
/// `to_message(&(handler)(__signal, __context))`, spanned at the return type, so that a message
/// that is not `Serialize` is reported there.
fn message(handler: &Handler, queue_crate: &TokenStream) -> TokenStream {
    let arg =
        |name: &str, ty: &Type| Ident::new(name, Span::mixed_site().located_at(referent_span(ty)));
    let mut args = arg("__signal", handler.signal_param).into_token_stream();
    if let Some(ty) = handler.context_param {
        let context_arg = arg("__context", ty);
        args.extend(quote!(, #context_arg));
    }
    let ident = handler.ident;
    let end = match handler.output {
        ReturnType::Default => ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let to_message = respan(quote!(#queue_crate::to_message), end);
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(end);
    let message = respan(quote!(&(#ident) #args), end);
    quote!(#to_message(#message))
}

/// `__signals_on_charge_card__OrderCreated`: the name of the `const` that holds a handler's
/// registration, unique per function and signal as written.
fn scope_ident(handler: &Ident, signal: &Type) -> Ident {
    let signal: String = signal
        .to_token_stream()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format_ident!("__signals_on_{}__{}", handler.unraw(), signal)
}

/// A `when = ...` filter as the catalog shows it: as written, with its own spacing on one line.
fn filter_text(when: &Expr) -> String {
    source_text(when.to_token_stream()).unwrap_or_else(|| type_name(when.to_token_stream()))
}

/// The closure that adapts the handler's shape to `HandlerInfo`'s one signature:
/// `|signal, context| into_handler_result(handler(signal, context))`, behind its filter.
fn thunk(
    signal: &Type,
    when: Option<&Expr>,
    handler: &Handler,
    private: &TokenStream,
) -> TokenStream {
    let mut body = call(handler, private);
    if let Some(when) = when {
        let accepted = accepts(signal, when, private);
        body = quote! {
            if #accepted {
                #body
            } else {
                #private::Ok(())
            }
        };
    }
    let body = match handler.asyncness {
        // Stored inline in `notify_async`'s future when it fits; the `Send` bound is checked
        // here, so rustc reports a handler whose future is not `Send` at its `async`.
        Some(asyncness) => {
            let span = asyncness.span;
            let inline = respan(quote!(#private::HandlerFuture::from_or_box), span);
            let mut block = Group::new(Delimiter::Brace, body);
            block.set_span(span);
            let async_move = respan(quote!(async move), span);
            let mut arg = Group::new(Delimiter::Parenthesis, quote!(#async_move #block));
            arg.set_span(span);
            quote!(#inline #arg)
        }
        None => body,
    };
    closure(signal, body)
}

/// `|__signal, __context| { body }`. The closure spans the signal's path, as the call taking it
/// does: rustc then reports a signal type that is not a signal once, there, not again for it.
fn closure(signal: &Type, body: TokenStream) -> TokenStream {
    // The parameters are mixed-site hygienic locals; only a lowercase unit struct or const of
    // the same name (both against Rust's naming conventions) could capture them.
    let param = |name: &str| Ident::new(name, Span::mixed_site());
    let (signal_param, context_param) = (param("__signal"), param("__context"));
    let params = respan_exact(quote!(|#signal_param, #context_param|), signal.span());
    let mut block = Group::new(Delimiter::Brace, body);
    block.set_span(last_token_span(signal));
    quote!(#params #block)
}

/// The handler called with `__signal` (and `__context`), its return value converted:
/// `into_handler_result((handler)(__signal, __context))`, `.await`ed for an `async fn`.
fn call(handler: &Handler, private: &TokenStream) -> TokenStream {
    // The arguments are located at the parameter types, so that rustc blames those on a
    // mismatch.
    let arg =
        |name: &str, ty: &Type| Ident::new(name, Span::mixed_site().located_at(referent_span(ty)));
    let mut args = arg("__signal", handler.signal_param).into_token_stream();
    if let Some(ty) = handler.context_param {
        let context_arg = arg("__context", ty);
        args.extend(quote!(, #context_arg));
    }
    // The call spans the signature, from the name to the end of the return type: rustc reports
    // a return type that is neither `()` nor `Result<(), E>` there.
    let ident = handler.ident;
    let end = match handler.output {
        ReturnType::Default => ident.span(),
        ReturnType::Type(_, ty) => last_token_span(ty),
    };
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(end);
    let convert = respan(quote!(#private::into_handler_result), end);
    let awaited = handler
        .asyncness
        .map(|asyncness| respan(quote!(.await), asyncness.span));
    // `(handler)`: in value position, like `function_id(&handler)`, so that a missing
    // function is one error, not "cannot find function" and "cannot find value".
    let mut callee = Group::new(Delimiter::Parenthesis, ident.to_token_stream());
    callee.set_span(ident.span());
    quote!(#convert(#callee #args #awaited))
}

/// Whether the `when` filter accepts `__signal` (and `__context`).
fn accepts(signal: &Type, when: &Expr, private: &TokenStream) -> TokenStream {
    let span = when.span();
    let accepts = respan(quote!(#private::accepts::<#signal, _, _, _>), span);
    let located = |name: &str| Ident::new(name, Span::mixed_site().located_at(span));
    let (signal_arg, context_arg) = (located("__signal"), located("__context"));
    let when = typed_closure(when, signal);
    quote!(#accepts(#signal_arg, &*#context_arg, #when))
}

/// A `when = |o| ...` closure with its parameters typed: `|o: &Signal| ...`, `|o: &Signal, c:
/// &_| ...`, so that the filter type-checks without annotations. Other filters are unchanged.
fn typed_closure(when: &Expr, signal: &Type) -> TokenStream {
    let Expr::Closure(closure) = when else {
        return when.to_token_stream();
    };
    let mut closure = closure.clone();
    for (i, input) in closure.inputs.iter_mut().enumerate() {
        if matches!(input, Pat::Type(_)) {
            continue;
        }
        let span = input.span();
        let ty: Type = match i {
            0 => parse_quote!(&#signal),
            _ => parse_quote!(&_),
        };
        *input = Pat::Type(syn::PatType {
            attrs: Vec::new(),
            pat: Box::new(input.clone()),
            colon_token: Token![:](span),
            ty: Box::new(respan_type(ty, span)),
        });
    }
    closure.to_token_stream()
}

fn respan_type(ty: Type, span: Span) -> Type {
    syn::parse2(respan(ty.to_token_stream(), span)).unwrap_or(ty)
}

/// The span of what a reference type refers to: `OrderCreated` in `&OrderCreated`.
fn referent_span(ty: &Type) -> Span {
    match ty {
        Type::Reference(reference) => reference.elem.span(),
        _ => ty.span(),
    }
}

/// `tokens` located at `span`, hygiene unchanged, so that rustc reports an error in them there.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut located = Group::new(group.delimiter(), respan(group.stream(), span));
                located.set_span(group.span().located_at(span));
                token = TokenTree::Group(located);
            } else {
                token.set_span(token.span().located_at(span));
            }
            token
        })
        .collect()
}

/// `tokens` at `span` itself, hygiene included, so that rustc sees them as the user's token;
/// identifiers keep their own hygiene.
fn respan_exact(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            match &token {
                TokenTree::Ident(ident) => token.set_span(ident.span().located_at(span)),
                _ => token.set_span(span),
            }
            token
        })
        .collect()
}

/// `function::<Signal>`, spanning exactly the signal's path as the user wrote it (see
/// `register`).
fn turbofish(function: TokenStream, signal: &Type) -> TokenStream {
    let open = respan_exact(quote!(#function::<), signal.span());
    let close = respan_exact(quote!(>), last_token_span(signal));
    quote!(#open #signal #close)
}

/// The span of the last token of `ty`: `>` in `Result<(), Error>`.
fn last_token_span(ty: &Type) -> Span {
    ty.to_token_stream()
        .into_iter()
        .last()
        .map_or_else(|| ty.span(), |token| token.span())
}
