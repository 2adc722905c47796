package main

// The arguments and exports of the Alloy components config.alloy may use, mirrored by hand from the
// component reference of Alloy v1.5.0 (docs/sources/reference/components/ and the shared blocks in
// docs/sources/shared/reference/components/). Each struct field is one documented argument or block:
// `attr` / `block`, and `optional` unless the reference marks it required. Defaults are not mirrored:
// only what a file may say is checked, not what Alloy does with it.

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/grafana/alloy/syntax/alloytypes"
)

// Capsules: values that only components produce. Declaring them as capsules makes the decoder refuse,
// for example, a list of targets where a receiver is expected.

// LogsReceiver is what loki.write exports as `receiver` and loki.source.* take in `forward_to`.
type LogsReceiver struct{ Component string }

func (LogsReceiver) AlloyCapsule() {}

// RelabelRules is what discovery.relabel exports as `rules` and loki.source.docker takes in `relabel_rules`.
type RelabelRules struct{ Component string }

func (RelabelRules) AlloyCapsule() {}

type Targets = []map[string]string // list(map(string))

// ---- shared blocks

type BasicAuth struct {
	Username     string            `alloy:"username,attr,optional"`
	Password     alloytypes.Secret `alloy:"password,attr,optional"`
	PasswordFile string            `alloy:"password_file,attr,optional"`
}

type Authorization struct {
	Type            string            `alloy:"type,attr,optional"`
	Credentials     alloytypes.Secret `alloy:"credentials,attr,optional"`
	CredentialsFile string            `alloy:"credentials_file,attr,optional"`
}

type TLSConfig struct {
	CAPEM              string            `alloy:"ca_pem,attr,optional"`
	CAFile             string            `alloy:"ca_file,attr,optional"`
	CertPEM            string            `alloy:"cert_pem,attr,optional"`
	CertFile           string            `alloy:"cert_file,attr,optional"`
	InsecureSkipVerify bool              `alloy:"insecure_skip_verify,attr,optional"`
	KeyFile            string            `alloy:"key_file,attr,optional"`
	KeyPEM             alloytypes.Secret `alloy:"key_pem,attr,optional"`
	MinVersion         string            `alloy:"min_version,attr,optional"`
	ServerName         string            `alloy:"server_name,attr,optional"`
}

func (t *TLSConfig) Validate() error {
	if t.MinVersion != "" && !slices.Contains([]string{"TLS10", "TLS11", "TLS12", "TLS13"}, t.MinVersion) {
		return fmt.Errorf("tls_config: min_version %q is not one of TLS10, TLS11, TLS12, TLS13", t.MinVersion)
	}
	return nil
}

type ProxyConfig struct {
	ProxyURL             string                         `alloy:"proxy_url,attr,optional"`
	NoProxy              string                         `alloy:"no_proxy,attr,optional"`
	ProxyFromEnvironment bool                           `alloy:"proxy_from_environment,attr,optional"`
	ProxyConnectHeader   map[string][]alloytypes.Secret `alloy:"proxy_connect_header,attr,optional"`
}

type OAuth2 struct {
	ClientID         string            `alloy:"client_id,attr,optional"`
	ClientSecret     alloytypes.Secret `alloy:"client_secret,attr,optional"`
	ClientSecretFile string            `alloy:"client_secret_file,attr,optional"`
	EndpointParams   map[string]string `alloy:"endpoint_params,attr,optional"`
	Scopes           []string          `alloy:"scopes,attr,optional"`
	TokenURL         string            `alloy:"token_url,attr,optional"`
	Proxy            ProxyConfig       `alloy:",squash"`
	TLSConfig        *TLSConfig        `alloy:"tls_config,block,optional"`
}

// HTTPClient is the shared HTTP client configuration (http-client-config-block.md).
type HTTPClient struct {
	BearerToken     alloytypes.Secret `alloy:"bearer_token,attr,optional"`
	BearerTokenFile string            `alloy:"bearer_token_file,attr,optional"`
	EnableHTTP2     bool              `alloy:"enable_http2,attr,optional"`
	FollowRedirects bool              `alloy:"follow_redirects,attr,optional"`
	Proxy           ProxyConfig       `alloy:",squash"`
	BasicAuth       *BasicAuth        `alloy:"basic_auth,block,optional"`
	Authorization   *Authorization    `alloy:"authorization,block,optional"`
	OAuth2          *OAuth2           `alloy:"oauth2,block,optional"`
	TLSConfig       *TLSConfig        `alloy:"tls_config,block,optional"`
}

// validate: the reference allows at most one way of authenticating.
func (c *HTTPClient) validate() error {
	n := 0
	for _, set := range []bool{c.BearerToken != "", c.BearerTokenFile != "", c.BasicAuth != nil, c.Authorization != nil, c.OAuth2 != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("at most one of bearer_token, bearer_token_file, basic_auth, authorization and oauth2 may be set")
	}
	return nil
}

// Rule is a relabeling rule (rule-block.md).
type Rule struct {
	SourceLabels []string `alloy:"source_labels,attr,optional"`
	Separator    string   `alloy:"separator,attr,optional"`
	Regex        string   `alloy:"regex,attr,optional"`
	Modulus      uint64   `alloy:"modulus,attr,optional"`
	TargetLabel  string   `alloy:"target_label,attr,optional"`
	Replacement  string   `alloy:"replacement,attr,optional"`
	Action       string   `alloy:"action,attr,optional"`
}

var relabelActions = []string{"drop", "dropequal", "hashmod", "keep", "keepequal", "labeldrop", "labelkeep",
	"labelmap", "lowercase", "replace", "uppercase"}

func (r *Rule) Validate() error {
	if r.Action != "" && !slices.Contains(relabelActions, r.Action) {
		return fmt.Errorf("rule: action %q is not one of %v", r.Action, relabelActions)
	}
	if _, err := regexp.Compile("^(?:" + r.Regex + ")$"); err != nil { // RE2, anchored as relabeling anchors it
		return fmt.Errorf("rule: regex %q is not a valid RE2 expression: %v", r.Regex, err)
	}
	return nil
}

// ---- components

type DiscoveryDocker struct {
	Host               string        `alloy:"host,attr"`
	Port               int           `alloy:"port,attr,optional"`
	HostNetworkingHost string        `alloy:"host_networking_host,attr,optional"`
	RefreshInterval    time.Duration `alloy:"refresh_interval,attr,optional"`
	Filters            []struct {
		Name   string   `alloy:"name,attr"`
		Values []string `alloy:"values,attr"`
	} `alloy:"filter,block,optional"`
	HTTP HTTPClient `alloy:",squash"`
}

func (a *DiscoveryDocker) Validate() error { return a.HTTP.validate() }

type DiscoveryRelabel struct {
	Targets Targets `alloy:"targets,attr"`
	Rules   []Rule  `alloy:"rule,block,optional"`
}

type DiscoveryKubernetes struct {
	APIServer      string `alloy:"api_server,attr,optional"`
	Role           string `alloy:"role,attr"`
	KubeconfigFile string `alloy:"kubeconfig_file,attr,optional"`
	Namespaces     *struct {
		OwnNamespace bool     `alloy:"own_namespace,attr,optional"`
		Names        []string `alloy:"names,attr,optional"`
	} `alloy:"namespaces,block,optional"`
	Selectors []struct {
		Role  string `alloy:"role,attr"`
		Label string `alloy:"label,attr,optional"`
		Field string `alloy:"field,attr,optional"`
	} `alloy:"selectors,block,optional"`
	AttachMetadata *struct {
		Node bool `alloy:"node,attr,optional"`
	} `alloy:"attach_metadata,block,optional"`
	HTTP HTTPClient `alloy:",squash"`
}

var kubernetesRoles = []string{"node", "pod", "service", "endpoints", "endpointslice", "ingress"}

func (a *DiscoveryKubernetes) Validate() error {
	if !slices.Contains(kubernetesRoles, a.Role) {
		return fmt.Errorf("role %q is not one of %v", a.Role, kubernetesRoles)
	}
	return a.HTTP.validate()
}

type LokiSourceDocker struct {
	Host    string         `alloy:"host,attr"`
	Targets Targets        `alloy:"targets,attr"`
	Forward []LogsReceiver `alloy:"forward_to,attr"`
	// The reference's table marks `labels` required yet gives it a default ({}); it is treated as optional.
	Labels          map[string]string `alloy:"labels,attr,optional"`
	RelabelRules    RelabelRules      `alloy:"relabel_rules,attr,optional"`
	RefreshInterval time.Duration     `alloy:"refresh_interval,attr,optional"`
	Client          *HTTPClient       `alloy:"client,block,optional"`
}

func (a *LokiSourceDocker) Validate() error {
	if a.Client != nil {
		return a.Client.validate()
	}
	return nil
}

type LokiSourceKubernetes struct {
	Targets Targets        `alloy:"targets,attr"`
	Forward []LogsReceiver `alloy:"forward_to,attr"`
	Client  *struct {
		APIServer      string     `alloy:"api_server,attr,optional"`
		KubeconfigFile string     `alloy:"kubeconfig_file,attr,optional"`
		HTTP           HTTPClient `alloy:",squash"`
	} `alloy:"client,block,optional"`
	Clustering *struct {
		Enabled bool `alloy:"enabled,attr"`
	} `alloy:"clustering,block,optional"`
}

func (a *LokiSourceKubernetes) Validate() error {
	if a.Client != nil {
		return a.Client.HTTP.validate()
	}
	return nil
}

type Endpoint struct {
	URL               string            `alloy:"url,attr"`
	Name              string            `alloy:"name,attr,optional"`
	Headers           map[string]string `alloy:"headers,attr,optional"`
	BatchWait         time.Duration     `alloy:"batch_wait,attr,optional"`
	BatchSize         string            `alloy:"batch_size,attr,optional"`
	RemoteTimeout     time.Duration     `alloy:"remote_timeout,attr,optional"`
	TenantID          string            `alloy:"tenant_id,attr,optional"`
	MinBackoff        time.Duration     `alloy:"min_backoff_period,attr,optional"`
	MaxBackoff        time.Duration     `alloy:"max_backoff_period,attr,optional"`
	MaxBackoffRetries int               `alloy:"max_backoff_retries,attr,optional"`
	RetryOnHTTP429    bool              `alloy:"retry_on_http_429,attr,optional"`
	HTTP              HTTPClient        `alloy:",squash"`
	QueueConfig       *struct {
		Capacity     string        `alloy:"capacity,attr,optional"`
		DrainTimeout time.Duration `alloy:"drain_timeout,attr,optional"`
	} `alloy:"queue_config,block,optional"`
}

// Validate: `url` is documented as the full URL logs are sent to.
func (e *Endpoint) Validate() error {
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint: url %q is not a full http(s) URL", e.URL)
	}
	return e.HTTP.validate()
}

type LokiWrite struct {
	MaxStreams     int               `alloy:"max_streams,attr,optional"`
	ExternalLabels map[string]string `alloy:"external_labels,attr,optional"`
	Endpoints      []Endpoint        `alloy:"endpoint,block,optional"`
	WAL            *struct {
		Enabled          bool          `alloy:"enabled,attr,optional"`
		MaxSegmentAge    time.Duration `alloy:"max_segment_age,attr,optional"`
		MinReadFrequency time.Duration `alloy:"min_read_frequency,attr,optional"`
		MaxReadFrequency time.Duration `alloy:"max_read_frequency,attr,optional"`
		DrainTimeout     time.Duration `alloy:"drain_timeout,attr,optional"`
	} `alloy:"wal,block,optional"`
}

// ---- exports (the "Exported fields" table of each component)

type TargetsExports struct {
	Targets Targets `alloy:"targets,attr"`
}

type RelabelExports struct {
	Output Targets      `alloy:"output,attr"`
	Rules  RelabelRules `alloy:"rules,attr"`
}

type ReceiverExports struct {
	Receiver LogsReceiver `alloy:"receiver,attr"`
}

type NoExports struct{}

// sampleTargets stands for what a discovery component finds when Alloy runs: one target, so that a
// list of targets given where another type is expected fails to decode (an empty list would not).
func sampleTargets() Targets { return Targets{{"__address__": "127.0.0.1:80"}} }

// Component describes one component: a fresh value of its arguments, and its exports for an instance.
type Component struct {
	Args    func() any
	Exports func(id string) any
}

var components = map[string]Component{
	"discovery.docker": {func() any { return &DiscoveryDocker{} },
		func(string) any { return TargetsExports{Targets: sampleTargets()} }},
	"discovery.relabel": {func() any { return &DiscoveryRelabel{} },
		func(id string) any { return RelabelExports{Output: sampleTargets(), Rules: RelabelRules{id}} }},
	"discovery.kubernetes": {func() any { return &DiscoveryKubernetes{} },
		func(string) any { return TargetsExports{Targets: sampleTargets()} }},
	"loki.source.docker": {func() any { return &LokiSourceDocker{} },
		func(string) any { return NoExports{} }},
	"loki.source.kubernetes": {func() any { return &LokiSourceKubernetes{} },
		func(string) any { return NoExports{} }},
	"loki.write": {func() any { return &LokiWrite{} },
		func(id string) any { return ReceiverExports{Receiver: LogsReceiver{id}} }},
}
