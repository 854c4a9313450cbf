//! `crate = path` on both macros: `framework-app` reaches signals only through
//! `framework::signals`, so its generated code must not name `::signals_core`.

#[test]
fn macros_work_through_a_reexport() {
    assert_eq!(framework_app::deploy().unwrap(), 1);
    let deployed = signals_core::catalog()
        .find("framework_app::Deployed")
        .next()
        .expect("the re-exported derive registers the signal");
    assert_eq!(deployed.context(), "u32");
    let names: Vec<_> = deployed.handlers().map(|h| h.name()).collect();
    assert_eq!(names, ["framework_app::count_deploy"]);
}
