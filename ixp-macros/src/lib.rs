//! The `#[ixp_plugin]` attribute of [ixp](https://docs.rs/ixp-core).
//!
//! Use it through `ixp_core::ixp_plugin`; this crate only generates code that names
//! `::ixp_core`. The attribute goes on the struct that implements `ixp_core::Plugin`
//! and emits two things:
//!
//! * an `impl ixp_core::PluginMeta` carrying the name, version, description,
//!   dependencies, provided services and Cargo feature given in the attribute;
//! * an `inventory::submit!` of the plugin's registration, so that
//!   `ixp_core::Catalog::linked()` finds the plugin at run time without any list kept
//!   by hand.
//!
//! Every mistake in the attribute is a compile error pointing at the tokens at fault.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Expr, ExprArray, ExprLit, Item, Lit, LitStr};

const KEYS: &str =
    "name, version, description, dependencies, optional_dependencies, provides, feature, enabled_by_default, crate";

/// Marks a struct as an ixp plugin and registers it at link time.
///
/// Keys: `name` (required), `version` (required, semver), `description`,
/// `dependencies` and `optional_dependencies` (lists of `"plugin-name"` or
/// `"plugin-name <semver requirement>"`), `provides` (the service names the plugin
/// registers, used in error messages), `feature` (the Cargo feature that compiles the
/// plugin in), `enabled_by_default` (`false` for a plugin that runs only when the
/// config has a section for it; default `true`), `crate` (the path of ixp-core if it
/// was renamed).
///
/// See the documentation of `ixp_core::Plugin` for a complete example.
#[proc_macro_attribute]
pub fn ixp_plugin(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut attrs = PluginAttrs::default();
    let parser = syn::meta::parser(|meta| attrs.parse_key(meta));
    parse_macro_input!(args with parser);

    let item = parse_macro_input!(input as Item);
    match expand(attrs, item) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

#[derive(Default)]
struct PluginAttrs {
    name: Option<LitStr>,
    version: Option<LitStr>,
    description: Option<LitStr>,
    dependencies: Option<Vec<LitStr>>,
    optional_dependencies: Option<Vec<LitStr>>,
    provides: Option<Vec<LitStr>>,
    feature: Option<LitStr>,
    enabled_by_default: Option<syn::LitBool>,
    krate: Option<syn::Path>,
}

impl PluginAttrs {
    fn parse_key(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let Some(ident) = meta.path.get_ident() else {
            return Err(meta.error(format!("unknown key; expected one of: {KEYS}")));
        };
        let key = ident.to_string();
        let span = ident.span();
        let duplicate = || {
            syn::Error::new(
                span,
                format!("duplicate key `{key}`: each key may be given once"),
            )
        };
        match key.as_str() {
            "name" => {
                let lit = parse_name(&meta)?;
                set_once(&mut self.name, lit).map_err(|_| duplicate())
            }
            "version" => {
                let lit: LitStr = meta.value()?.parse()?;
                if let Err(err) = semver::Version::parse(&lit.value()) {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "`{}` is not a semantic version ({err}); write it as MAJOR.MINOR.PATCH, e.g. \"1.0.0\"",
                            lit.value()
                        ),
                    ));
                }
                set_once(&mut self.version, lit).map_err(|_| duplicate())
            }
            "description" => {
                let lit: LitStr = meta.value()?.parse()?;
                set_once(&mut self.description, lit).map_err(|_| duplicate())
            }
            "dependencies" | "optional_dependencies" => {
                let list = parse_string_list(&meta)?;
                for dep in &list {
                    check_dependency(dep)?;
                }
                let slot = if key == "dependencies" {
                    &mut self.dependencies
                } else {
                    &mut self.optional_dependencies
                };
                set_once(slot, list).map_err(|_| duplicate())
            }
            "provides" => {
                let list = parse_string_list(&meta)?;
                set_once(&mut self.provides, list).map_err(|_| duplicate())
            }
            "feature" => {
                let lit: LitStr = meta.value()?.parse()?;
                set_once(&mut self.feature, lit).map_err(|_| duplicate())
            }
            "enabled_by_default" => {
                let lit: syn::LitBool = meta
                    .value()?
                    .parse()
                    .map_err(|e| syn::Error::new(e.span(), "expected `true` or `false`"))?;
                set_once(&mut self.enabled_by_default, lit).map_err(|_| duplicate())
            }
            "crate" => {
                let lit: LitStr = meta.value()?.parse()?;
                let path = lit.parse::<syn::Path>()?;
                set_once(&mut self.krate, path).map_err(|_| duplicate())
            }
            _ => Err(syn::Error::new(
                span,
                format!("unknown key `{key}`; expected one of: {KEYS}"),
            )),
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ()> {
    if slot.is_some() {
        return Err(());
    }
    *slot = Some(value);
    Ok(())
}

fn parse_name(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let lit: LitStr = meta.value()?.parse()?;
    let value = lit.value();
    if value.is_empty() {
        return Err(syn::Error::new(lit.span(), "plugin name must not be empty"));
    }
    if let Some(bad) = value.chars().find(|c| !is_name_char(*c)) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "plugin name `{value}` contains `{bad}`; use lowercase letters, digits, `-`, `_` and `.`"
            ),
        ));
    }
    Ok(lit)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

fn parse_string_list(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Vec<LitStr>> {
    let array: ExprArray = meta.value()?.parse().map_err(|err| {
        syn::Error::new(
            err.span(),
            "expected a list of strings, e.g. [\"database-plugin\", \"cache-plugin >=1.2\"]",
        )
    })?;
    array
        .elems
        .iter()
        .map(|elem| match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => Ok(lit.clone()),
            other => Err(syn::Error::new(other.span(), "expected a string literal")),
        })
        .collect()
}

/// A dependency is `"name"` or `"name <semver requirement>"`.
fn check_dependency(lit: &LitStr) -> syn::Result<()> {
    let text = lit.value();
    let trimmed = text.trim();
    let (name, requirement) = match trimmed.find(char::is_whitespace) {
        Some(at) => (&trimmed[..at], Some(trimmed[at..].trim())),
        None => (trimmed, None),
    };
    if name.is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            "empty dependency; write \"plugin-name\" or \"plugin-name >=1.2\"",
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "malformed dependency `{text}`: `{bad}` cannot appear in a plugin name; write \"plugin-name\" or \"plugin-name >=1.2\""
            ),
        ));
    }
    if let Some(req) = requirement {
        if let Err(err) = semver::VersionReq::parse(req) {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "malformed dependency `{text}`: `{req}` is not a semver requirement ({err})"
                ),
            ));
        }
    }
    Ok(())
}

fn expand(attrs: PluginAttrs, item: Item) -> syn::Result<proc_macro2::TokenStream> {
    let strukt = match item {
        Item::Struct(strukt) => strukt,
        other => {
            return Err(syn::Error::new(
                item_keyword_span(&other),
                "#[ixp_plugin] goes on a struct (the plugin type), not on this item",
            ))
        }
    };
    if !strukt.generics.params.is_empty() {
        return Err(syn::Error::new(
            strukt.generics.span(),
            "#[ixp_plugin] structs cannot be generic: the registry needs one concrete type per plugin",
        ));
    }
    let name = attrs.name.ok_or_else(|| {
        syn::Error::new(
            strukt.ident.span(),
            "#[ixp_plugin] needs a name: #[ixp_plugin(name = \"my-plugin\", version = \"1.0.0\")]",
        )
    })?;
    let version = attrs.version.ok_or_else(|| {
        syn::Error::new(
            strukt.ident.span(),
            "#[ixp_plugin] needs a version: #[ixp_plugin(name = \"my-plugin\", version = \"1.0.0\")]",
        )
    })?;
    let krate = attrs.krate.unwrap_or_else(|| syn::parse_quote!(::ixp_core));
    let description = attrs
        .description
        .unwrap_or_else(|| LitStr::new("", Span::call_site()));
    let dependencies = attrs.dependencies.unwrap_or_default();
    let optional = attrs.optional_dependencies.unwrap_or_default();
    let provides = attrs.provides.unwrap_or_default();
    let feature = match attrs.feature {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let enabled_by_default = attrs.enabled_by_default.is_none_or(|lit| lit.value);
    let ident = &strukt.ident;
    let registration = quote_spanned! {ident.span()=>
        #krate::__private::inventory::submit! {
            #krate::PluginRegistration::of::<#ident>()
        }
    };
    Ok(quote! {
        #strukt

        impl #krate::PluginMeta for #ident {
            const METADATA: #krate::PluginMetadata = #krate::PluginMetadata {
                name: #name,
                version: #version,
                description: #description,
                dependencies: &[#(#dependencies),*],
                optional_dependencies: &[#(#optional),*],
                provides: &[#(#provides),*],
                feature: #feature,
                enabled_by_default: #enabled_by_default,
            };
        }

        #registration
    })
}

fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Enum(e) => e.enum_token.span,
        Item::Fn(f) => f.sig.fn_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Trait(t) => t.trait_token.span,
        Item::Union(u) => u.union_token.span,
        Item::Type(t) => t.type_token.span,
        Item::Mod(m) => m.mod_token.span,
        Item::Const(c) => c.const_token.span,
        Item::Static(s) => s.static_token.span,
        other => other.span(),
    }
}
