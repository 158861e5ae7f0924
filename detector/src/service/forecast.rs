//! Fetching the delivery statistics a round's fold will read: the engine
//! predicts synchronously from the forecaster's cache, so before folding,
//! every (lane key, day) the round's updates can ask for is fetched — the
//! days of the scans in the round, of the scans a joining registration
//! replays and of the stored view's newest and waiting scans (an update's
//! prediction is made at its newest scan).

use trackstream_lanes::parcel;
use trackstream_proto::time;
use trackstream_proto::v1::TrackingEvent;

use super::Detector;
use super::pipeline::Group;
use crate::engine::Input;
use crate::letters::Failure;
use crate::sink::Sink;
use crate::store::Loaded;

impl<S: Sink> Detector<S> {
    /// Fetches the windows the fold of `groups` (with what was loaded for
    /// them) can read; nothing without a forecaster.
    pub(super) async fn prefetch_windows(
        &self,
        groups: &[Option<&Group>],
        loaded: &[Loaded],
        histories: &[Vec<TrackingEvent>],
    ) -> Result<(), Failure> {
        let Some(forecaster) = self.engine.forecaster() else {
            return Ok(());
        };
        let mut needs = Vec::new();
        for ((group, loaded), history) in groups.iter().zip(loaded).zip(histories) {
            let Some(group) = group else { continue };
            let state = &loaded.waybill.state;
            let view = state.received.as_ref();
            let mut days: Vec<i64> = group
                .inputs
                .iter()
                .filter_map(|i| match i {
                    Input::Event(e) => Some(e),
                    Input::Registration(_) => None,
                })
                .chain(history)
                .chain(view.into_iter().flat_map(|v| &v.waiting))
                .chain(&state.pending)
                .map(|e| parcel::day_of_millis(time::millis(e.occurred_at.as_ref())))
                .chain(view.map(|v| parcel::day_of_millis(v.newest)))
                .chain(Some(parcel::day_of_millis(state.last_event_at)))
                .collect();
            days.sort_unstable();
            days.dedup();
            let registrations = group.inputs.iter().filter_map(|i| match i {
                Input::Registration(s) => Some(s),
                Input::Event(_) => None,
            });
            for shipment in loaded.waybill.registration.iter().chain(registrations) {
                forecaster.needs(shipment, &days, &mut needs);
            }
        }
        if needs.is_empty() {
            return Ok(());
        }
        forecaster.prefetch(needs).await.map_err(Failure::from)
    }
}
