//! Every misuse of `#[ixp_plugin]` is a compile error pointing at the tokens at fault.
//! The expected messages are the `.stderr` files beside each case in `tests/ui/`
//! (regenerate with `TRYBUILD=overwrite cargo test -p ixp-tests --test macro_ui`).

#[test]
fn misuse_of_the_attribute_does_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
