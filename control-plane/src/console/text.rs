//! Every string the console shows, in English and Simplified Chinese: one [`Text`] per
//! language, so a string missing from either does not compile.

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
}

static EN: Text = Text {
    product: "Codex Gateway",
    language_name: "English",
    sign_in: "Sign in",
    sign_in_hint: "Paste the admin token (ADMIN_TOKEN) to open the console.",
    admin_token: "Admin token",
    sign_out: "Sign out",
    wrong_token: "Wrong token.",
    too_many_attempts: "Too many sign-in attempts; wait a minute and try again.",
    nav_upstreams: "Upstreams",
    upstreams: "Upstream account pools",
    add_upstream: "Add upstream",
    edit_upstream: "Edit upstream",
    no_upstreams: "No upstreams yet. Add the account pool requests should go to.",
    name: "Name",
    base_url: "Base URL",
    api_key: "API key",
    api_key_hint_new: "Stored encrypted; only its last characters are ever shown.",
    api_key_hint_edit: "Leave empty to keep the current key.",
    priority: "Priority",
    priority_hint: "Tier: 0 = preferred; higher tiers take traffic only when lower ones cannot.",
    tier: "Tier (0 = preferred)",
    weight: "Weight",
    max_retries: "Max retries",
    timeout: "Timeout (s)",
    timeout_hint: "Connect and response head, and any silence between chunks.",
    probe_path: "Probe path",
    models: "Models",
    models_hint: "Comma-separated; empty = every model.",
    all_models: "all",
    enabled: "Enabled",
    disabled: "Disabled",
    status: "Status",
    health: "Health",
    last_probe: "Last probe",
    never: "never",
    key: "Key",
    actions: "Actions",
    save: "Save",
    cancel: "Cancel",
    edit: "Edit",
    enable: "Enable",
    disable: "Disable",
    delete: "Delete",
    delete_confirm: "Delete this upstream?",
    delete_warning: "Requests stop going to it at once. Its usage history is kept.",
    test_health: "Test health",
    probe_result: "Health test",
    healthy: "healthy",
    unhealthy: "unhealthy",
    unknown: "unknown",
    http_status: "HTTP status",
    latency: "Latency",
    error: "Error",
    probed_url: "Probed URL",
    back: "Back",
    saved: "Saved.",
    deleted: "Deleted.",
    forbidden: "This request was refused: reload the page and try again.",
    not_found: "Not found.",
    unavailable: "The control plane's database is unavailable; try again.",
};

static ZH: Text = Text {
    product: "Codex 网关",
    language_name: "简体中文",
    sign_in: "登录",
    sign_in_hint: "粘贴管理令牌（ADMIN_TOKEN）以打开控制台。",
    admin_token: "管理令牌",
    sign_out: "退出登录",
    wrong_token: "令牌错误。",
    too_many_attempts: "登录尝试过多，请稍等一分钟再试。",
    nav_upstreams: "上游",
    upstreams: "上游账号池",
    add_upstream: "添加上游",
    edit_upstream: "编辑上游",
    no_upstreams: "还没有上游。请添加请求要转发到的账号池。",
    name: "名称",
    base_url: "基础 URL",
    api_key: "API 密钥",
    api_key_hint_new: "加密保存，只会显示末尾几位。",
    api_key_hint_edit: "留空则保留当前密钥。",
    priority: "优先级",
    priority_hint: "层级：0 = 首选；只有低层级无法服务时，高层级才会接收流量。",
    tier: "层级（0 = 首选）",
    weight: "权重",
    max_retries: "最大重试次数",
    timeout: "超时（秒）",
    timeout_hint: "连接与响应头的时限，以及数据块之间的最长静默。",
    probe_path: "探测路径",
    models: "模型",
    models_hint: "用逗号分隔；留空 = 所有模型。",
    all_models: "全部",
    enabled: "已启用",
    disabled: "已停用",
    status: "状态",
    health: "健康状况",
    last_probe: "上次探测",
    never: "从未",
    key: "密钥",
    actions: "操作",
    save: "保存",
    cancel: "取消",
    edit: "编辑",
    enable: "启用",
    disable: "停用",
    delete: "删除",
    delete_confirm: "删除这个上游？",
    delete_warning: "请求会立即停止发往它。它的用量记录会保留。",
    test_health: "测试健康",
    probe_result: "健康测试",
    healthy: "健康",
    unhealthy: "不健康",
    unknown: "未知",
    http_status: "HTTP 状态码",
    latency: "延迟",
    error: "错误",
    probed_url: "探测的 URL",
    back: "返回",
    saved: "已保存。",
    deleted: "已删除。",
    forbidden: "请求被拒绝：请刷新页面后重试。",
    not_found: "未找到。",
    unavailable: "控制面的数据库暂时不可用，请重试。",
};

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
