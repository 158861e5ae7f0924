//! Every adapter is registered under its route and its provider.

use trackstream_carriers::Registry;
use trackstream_proto::v1::Provider;

#[test]
fn builtin_registry_serves_every_provider() {
    let registry = Registry::builtin();
    for (route, provider) in [
        ("generic", Provider::Generic),
        ("kdniao", Provider::Kdniao),
        ("kuaidi100", Provider::Kuaidi100),
        ("17track", Provider::SeventeenTrack),
        ("aftership", Provider::Aftership),
        ("easypost", Provider::Easypost),
    ] {
        let by_route = registry.by_route(route).expect(route);
        assert_eq!(by_route.provider(), provider);
        assert_eq!(
            registry.by_provider(provider).map(|a| a.route()),
            Some(route)
        );
    }
    assert_eq!(registry.iter().count(), 6);
    assert!(registry.by_route("dhl").is_none());
}
