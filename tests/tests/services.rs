//! The service registry: by name, by type, factories, errors that explain.

use std::sync::Arc;

use ixp_core::{ServiceError, ServiceRegistry};

#[derive(Debug)]
struct Mailer {
    from: String,
}

#[test]
fn register_and_get_by_name_and_by_type() {
    let registry = ServiceRegistry::new();
    registry
        .register(
            "email",
            Mailer {
                from: "noreply@example.com".into(),
            },
        )
        .expect("register");
    let by_name: Arc<Mailer> = registry.get("email").expect("by name");
    let by_type: Arc<Mailer> = registry.get_typed().expect("by type");
    assert!(Arc::ptr_eq(&by_name, &by_type));
    assert_eq!(by_name.from, "noreply@example.com");
    assert_eq!(registry.names(), ["email"]);
}

#[test]
fn errors_name_the_service_the_types_and_the_provider() {
    let registry = ServiceRegistry::new();
    registry.set_providers([("cache".to_owned(), "cache-plugin".to_owned())]);
    registry
        .register(
            "email",
            Mailer {
                from: String::new(),
            },
        )
        .expect("register");

    let missing = registry.get::<Mailer>("cache").expect_err("missing");
    assert_eq!(
        missing.to_string(),
        "service `cache` is not registered, it is provided by plugin `cache-plugin`: enable it and declare it as a dependency so that it starts first"
    );
    let wrong = registry.get::<String>("email").expect_err("wrong type");
    assert!(matches!(wrong, ServiceError::WrongType { .. }));
    assert!(
        wrong
            .to_string()
            .contains("is a `services::Mailer`, not a `alloc::string::String`"),
        "{wrong}"
    );
    let taken = registry.register("email", 1_u8).expect_err("taken");
    assert_eq!(taken.to_string(), "service `email` is already registered");

    registry
        .register(
            "backup-email",
            Mailer {
                from: String::new(),
            },
        )
        .expect("register");
    let ambiguous = registry.get_typed::<Mailer>().expect_err("two of them");
    assert!(
        ambiguous
            .to_string()
            .contains("several are registered (backup-email, email)"),
        "{ambiguous}"
    );
    assert!(registry
        .get_typed::<u64>()
        .expect_err("none")
        .to_string()
        .contains("none is registered"));
}

#[test]
fn factories_create_a_new_instance_each_time() {
    let registry = ServiceRegistry::new();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = counter.clone();
    registry
        .register_factory("ticket", move || {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        })
        .expect("register");
    assert_eq!(
        registry.create_instance::<u32>("ticket").expect("create"),
        0
    );
    assert_eq!(
        registry.create_instance::<u32>("ticket").expect("create"),
        1
    );
    assert!(matches!(
        registry.create_instance::<String>("ticket"),
        Err(ServiceError::WrongType { .. })
    ));
    assert!(registry.unregister("ticket"));
    assert!(!registry.contains("ticket"));
    assert!(!registry.unregister("ticket"));
}

#[test]
fn what_a_plugin_registers_is_removed_with_its_owner() {
    let registry = ServiceRegistry::new();
    let scoped = registry.scoped("mail-plugin");
    scoped
        .register(
            "email",
            Mailer {
                from: String::new(),
            },
        )
        .expect("register");
    scoped
        .register_factory("draft", String::new)
        .expect("register");
    registry.register("unowned", 1_u8).expect("register");
    assert_eq!(registry.names_owned_by("mail-plugin"), ["draft", "email"]);
    let taken = registry.register("email", 2_u8).expect_err("taken");
    assert_eq!(
        taken.to_string(),
        "service `email` is already registered (by plugin `mail-plugin`)"
    );
    assert_eq!(registry.remove_owner("mail-plugin"), ["draft", "email"]);
    assert_eq!(registry.names(), ["unowned"]);
}
