//! [`trackstream_web::Backend`] over the gRPC API's own reads, hubs and quotas.

use std::sync::Arc;
use std::time::Duration;

use trackstream_proto::v1::{
    Alert, GetScorecardsRequest, Incident, ListIncidentsRequest, Order, Scorecards, Severity,
    ShipmentUpdate,
};
use trackstream_runtime::ApiError;
use trackstream_runtime::merchants::MerchantConfig;
use trackstream_runtime::order_log;
use trackstream_web::backend::{DeadLetterCount, Merchant, Watch};

use super::WebIndex;
use super::deadletters;
use crate::grpc::{self, Api};

/// The notifier as the web face's host.
pub struct NotifierBackend {
    /// The gRPC API (reads, hubs, quotas).
    pub api: Arc<Api>,
    /// The web indexes.
    pub index: WebIndex,
}

impl NotifierBackend {
    fn merchant(&self, merchant_id: &str) -> Result<&MerchantConfig, ApiError> {
        self.api
            .merchants
            .get(merchant_id)
            .ok_or_else(|| ApiError::NotFound("no such shop".into()))
    }
}

impl trackstream_web::Backend for NotifierBackend {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Merchant, ApiError> {
        let merchant = self.api.merchants.authenticate(authorization)?;
        Ok(Merchant {
            id: merchant.id.clone(),
            name: merchant.name.clone(),
        })
    }

    fn shop_name(&self, merchant_id: &str) -> Option<String> {
        self.api.merchants.get(merchant_id).map(|m| m.name.clone())
    }

    async fn order(&self, merchant_id: &str, order_id: &str) -> Result<Option<Order>, ApiError> {
        let merchant = self.merchant(merchant_id)?;
        if !self.api.visible(merchant, order_id).await? {
            return Ok(None);
        }
        self.api.read_order(merchant_id, order_id).await.map(Some)
    }

    async fn buyer_orders(
        &self,
        merchant_id: &str,
        buyer_key: &str,
        limit: usize,
    ) -> Result<Vec<String>, ApiError> {
        Ok(self
            .index
            .buyer_orders(merchant_id, buyer_key, limit)
            .await?)
    }

    async fn waybill_orders(
        &self,
        merchant_id: &str,
        waybill: &str,
    ) -> Result<Vec<String>, ApiError> {
        Ok(self.index.waybill_orders(merchant_id, waybill).await?)
    }

    async fn order_phones(
        &self,
        merchant_id: &str,
        order_id: &str,
    ) -> Result<Vec<String>, ApiError> {
        let merchant = self.merchant(merchant_id)?;
        if !self.api.visible(merchant, order_id).await? {
            return Ok(Vec::new());
        }
        let parcels = self
            .api
            .outbox
            .parcels(&order_log::order_ref(merchant_id, order_id))
            .await?;
        Ok(parcels
            .into_iter()
            .filter(|s| s.merchant_id == merchant_id)
            .filter_map(|s| s.buyer.map(|b| b.phone))
            .filter(|p| !p.is_empty())
            .collect())
    }

    async fn open_alerts(
        &self,
        merchant_id: &str,
        min: Severity,
        limit: usize,
    ) -> Result<Vec<Alert>, ApiError> {
        Ok(self
            .index
            .open_alerts(merchant_id, min as i32, limit)
            .await?)
    }

    async fn watch_order(
        &self,
        merchant_id: &str,
        order_id: &str,
        after_seq: u64,
    ) -> Result<Watch<ShipmentUpdate>, ApiError> {
        let merchant = self.merchant(merchant_id)?.clone();
        self.api
            .open_order_watch(&merchant, order_id.to_owned(), after_seq)
            .await
    }

    fn watch_alerts(&self, merchant_id: &str, min: Severity) -> Result<Watch<Alert>, ApiError> {
        self.api.open_alert_watch(merchant_id, min as i32)
    }

    async fn incidents(&self, merchant_id: &str, days: u32) -> Result<Vec<Incident>, ApiError> {
        let request = ListIncidentsRequest {
            include_resolved: true,
            days: days.clamp(1, 30),
        };
        let now = self.api.clock.now();
        Ok(
            grpc::incidents::list(&self.api.incident_store, merchant_id, &request, now)
                .await?
                .incidents,
        )
    }

    async fn scorecards(&self, merchant_id: &str, days: u32) -> Result<Scorecards, ApiError> {
        let request = GetScorecardsRequest {
            days,
            carrier: String::new(),
        };
        let today = chrono::Utc::now().timestamp().div_euclid(86_400);
        grpc::scorecards::scorecards(&self.api.conn, merchant_id, &request, today).await
    }

    async fn dead_letters(&self, merchant_id: &str) -> Result<Vec<DeadLetterCount>, ApiError> {
        let today = chrono::Utc::now().timestamp().div_euclid(86_400);
        Ok(deadletters::counts(&self.api.conn, merchant_id, today, 7).await?)
    }

    async fn count_attempt(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<(u64, Duration), ApiError> {
        Ok(self.index.count_attempt(key, window).await?)
    }
}
