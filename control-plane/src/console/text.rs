//! Every string the console shows, in English and Simplified Chinese: one [`Text`] per
//! language, so a string missing from either does not compile.

mod en;
mod zh;

use self::{en::EN, zh::ZH};

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The language a request asks for: the `lang` cookie the switch sets, else the first of
    /// `Accept-Language` that is Chinese or English, else English.
    pub fn choose(cookie: Option<&str>, accept_language: Option<&str>) -> Self {
        match cookie {
            Some("zh") => return Self::Zh,
            Some("en") => return Self::En,
            _ => {}
        }
        for tag in accept_language.unwrap_or("").split(',') {
            let tag = tag
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Self::Zh;
            }
            if tag.starts_with("en") {
                return Self::En;
            }
        }
        Self::En
    }

    /// Its code in `lang` attributes and the cookie.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh",
        }
    }

    /// The other language, which the switch offers.
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Zh,
            Self::Zh => Self::En,
        }
    }

    /// Its strings.
    pub fn text(self) -> &'static Text {
        match self {
            Self::En => &EN,
            Self::Zh => &ZH,
        }
    }
}

/// The console's strings.
#[derive(Debug)]
pub struct Text {
    pub product: &'static str,
    pub language_name: &'static str,
    pub sign_in: &'static str,
    pub sign_in_hint: &'static str,
    pub admin_token: &'static str,
    pub sign_out: &'static str,
    pub wrong_token: &'static str,
    pub too_many_attempts: &'static str,
    pub nav_dashboard: &'static str,
    pub dashboard: &'static str,
    pub last_48h: &'static str,
    pub last_90d: &'static str,
    pub dashboard_hint: &'static str,
    pub narrowed_to: &'static str,
    pub show_all: &'static str,
    pub input_tokens: &'static str,
    pub cached_tokens: &'static str,
    pub output_tokens: &'static str,
    pub error_rate: &'static str,
    pub cache_hit: &'static str,
    pub cache_hit_hint: &'static str,
    pub errors: &'static str,
    pub succeeded: &'static str,
    pub tokens: &'static str,
    pub uncached_input: &'static str,
    pub rates: &'static str,
    pub by_model: &'static str,
    pub by_upstream: &'static str,
    pub upstream_health: &'static str,
    pub no_upstream_reached: &'static str,
    pub no_traffic: &'static str,
    pub nav_upstreams: &'static str,
    pub upstreams: &'static str,
    pub add_upstream: &'static str,
    pub edit_upstream: &'static str,
    pub no_upstreams: &'static str,
    pub name: &'static str,
    pub base_url: &'static str,
    pub api_key: &'static str,
    pub api_key_hint_new: &'static str,
    pub api_key_hint_edit: &'static str,
    pub priority: &'static str,
    pub priority_hint: &'static str,
    pub tier: &'static str,
    pub weight: &'static str,
    pub max_retries: &'static str,
    pub timeout: &'static str,
    pub timeout_hint: &'static str,
    pub probe_path: &'static str,
    pub models: &'static str,
    pub models_hint: &'static str,
    pub all_models: &'static str,
    pub enabled: &'static str,
    pub disabled: &'static str,
    pub status: &'static str,
    pub health: &'static str,
    pub last_probe: &'static str,
    pub never: &'static str,
    pub key: &'static str,
    pub actions: &'static str,
    pub save: &'static str,
    pub cancel: &'static str,
    pub edit: &'static str,
    pub enable: &'static str,
    pub disable: &'static str,
    pub delete: &'static str,
    pub delete_confirm: &'static str,
    pub delete_warning: &'static str,
    pub test_health: &'static str,
    pub probe_result: &'static str,
    pub healthy: &'static str,
    pub unhealthy: &'static str,
    pub unknown: &'static str,
    pub http_status: &'static str,
    pub latency: &'static str,
    pub error: &'static str,
    pub probed_url: &'static str,
    pub back: &'static str,
    pub saved: &'static str,
    pub deleted: &'static str,
    pub forbidden: &'static str,
    pub not_found: &'static str,
    pub unavailable: &'static str,
    pub nav_users: &'static str,
    pub nav_keys: &'static str,
    pub users: &'static str,
    pub add_user: &'static str,
    pub no_users: &'static str,
    pub search: &'static str,
    pub search_button: &'static str,
    pub balance: &'static str,
    pub initial_balance: &'static str,
    pub multiplier: &'static str,
    pub multiplier_hint: &'static str,
    pub created: &'static str,
    pub next_page: &'static str,
    pub first_page: &'static str,
    pub user: &'static str,
    pub edit_user: &'static str,
    pub adjust_balance: &'static str,
    pub amount: &'static str,
    pub amount_hint: &'static str,
    pub reason: &'static str,
    pub apply: &'static str,
    pub keys: &'static str,
    pub add_key: &'static str,
    pub no_keys: &'static str,
    pub prefix: &'static str,
    pub expires: &'static str,
    pub expires_hint: &'static str,
    pub ip_allow: &'static str,
    pub ip_allow_hint: &'static str,
    pub rpm: &'static str,
    pub concurrency: &'static str,
    pub limit_hint: &'static str,
    pub spend_limits: &'static str,
    pub spend_limit_hint: &'static str,
    pub revoked: &'static str,
    pub active: &'static str,
    pub revoke: &'static str,
    pub revoke_confirm: &'static str,
    pub revoke_warning: &'static str,
    pub key_created: &'static str,
    pub secret_once: &'static str,
    pub copy: &'static str,
    pub copied: &'static str,
    pub spend: &'static str,
    pub requests: &'static str,
    pub cost: &'static str,
    pub model: &'static str,
    pub no_usage: &'static str,
    pub none: &'static str,
    pub all_keys: &'static str,
    pub keys_of: &'static str,
    pub nav_prices: &'static str,
    pub nav_audit: &'static str,
    pub prices: &'static str,
    pub price_hint: &'static str,
    pub input: &'static str,
    pub cached_input: &'static str,
    pub output: &'static str,
    pub set_price: &'static str,
    pub no_prices: &'static str,
    pub audit: &'static str,
    pub audit_hint: &'static str,
    pub time: &'static str,
    pub who: &'static str,
    pub from: &'static str,
    pub action: &'static str,
    pub target: &'static str,
    pub version: &'static str,
    pub changed: &'static str,
    pub no_audit: &'static str,
    pub nav_usage: &'static str,
    pub usage: &'static str,
    pub filter: &'static str,
    pub clear: &'static str,
    pub upstream: &'static str,
    pub any: &'static str,
    pub since: &'static str,
    pub until: &'static str,
    pub time_hint: &'static str,
    pub download_csv: &'static str,
    pub no_events: &'static str,
    pub cached: &'static str,
    pub reasoning: &'static str,
    pub ttfb: &'static str,
    pub duration: &'static str,
    pub portal: &'static str,
    pub portal_hint: &'static str,
    pub gateway_key: &'static str,
    pub wrong_key: &'static str,
    pub recent_requests: &'static str,
    pub limits: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_wins_then_accept_language_then_english() {
        assert_eq!(Lang::choose(Some("zh"), Some("en-US")), Lang::Zh);
        assert_eq!(Lang::choose(Some("en"), Some("zh-CN")), Lang::En);
        assert_eq!(
            Lang::choose(None, Some("zh-CN,zh;q=0.9,en;q=0.8")),
            Lang::Zh
        );
        assert_eq!(
            Lang::choose(None, Some("fr-FR, en;q=0.5, zh;q=0.1")),
            Lang::En
        );
        assert_eq!(Lang::choose(Some("xx"), None), Lang::En);
    }
}
