package redisstore

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
)

// tlsWant is the part of a *tls.Config that ParseURL decides.
type tlsWant struct {
	MinVersion         uint16
	ServerName         string
	InsecureSkipVerify bool
}

// takeTLS returns o's TLS settings and clears them, so that the rest of o
// can be compared.
func takeTLS(o *ClientOptions) *tlsWant {
	var c **tls.Config
	switch {
	case o.Node != nil:
		c = &o.Node.TLSConfig
	case o.Cluster != nil:
		c = &o.Cluster.TLSConfig
	case o.Failover != nil:
		c = &o.Failover.TLSConfig
	}
	if c == nil || *c == nil {
		return nil
	}
	got := &tlsWant{(*c).MinVersion, (*c).ServerName, (*c).InsecureSkipVerify}
	*c = nil
	return got
}

func TestParseURL(t *testing.T) {
	tls12 := &tlsWant{MinVersion: tls.VersionTLS12}
	tests := []struct {
		name string
		url  string
		want ClientOptions // ContextTimeoutEnabled is added to each
		tls  *tlsWant
	}{
		{
			name: "one node",
			url:  "redis://127.0.0.1:6380",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "127.0.0.1:6380"}},
		},
		{
			name: "default port",
			url:  "redis://cache.internal",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "cache.internal:6379"}},
		},
		{
			name: "credentials, database and options",
			url:  "redis://app:p%40ss@cache:6379/2?dial_timeout=3&read_timeout=500ms&client_name=cp&pool_size=20&max_retries=-1",
			want: ClientOptions{Node: &redis.Options{
				Network: "tcp", Addr: "cache:6379", Username: "app", Password: "p@ss", DB: 2,
				DialTimeout: 3 * time.Second, ReadTimeout: 500 * time.Millisecond,
				ClientName: "cp", PoolSize: 20, MaxRetries: -1,
			}},
		},
		{
			name: "database as a parameter",
			url:  "redis://cache?db=4",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "cache:6379", DB: 4}},
		},
		{
			name: "TLS",
			url:  "rediss://:secret@cache.example.com:6380",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "cache.example.com:6380", Password: "secret"}},
			tls:  &tlsWant{MinVersion: tls.VersionTLS12, ServerName: "cache.example.com"},
		},
		{
			name: "IPv6",
			url:  "redis://[::1]:7000",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "[::1]:7000"}},
		},
		{
			name: "IPv6 default port",
			url:  "redis://[::1]",
			want: ClientOptions{Node: &redis.Options{Network: "tcp", Addr: "[::1]:6379"}},
		},
		{
			name: "sentinel",
			url:  "redis+sentinel://:secret@s1:26380,s2/mymaster?db=3&sentinel_password=sp",
			want: ClientOptions{Failover: &redis.FailoverOptions{
				SentinelAddrs: []string{"s1:26380", "s2:26379"}, MasterName: "mymaster", DB: 3,
				Password: "secret", SentinelPassword: "sp",
			}},
		},
		{
			name: "sentinel, user and password the data nodes' only",
			url:  "redis+sentinel://u:pw@s1/m",
			want: ClientOptions{Failover: &redis.FailoverOptions{
				SentinelAddrs: []string{"s1:26379"}, MasterName: "m", Username: "u", Password: "pw",
			}},
		},
		{
			name: "sentinel with TLS",
			url:  "rediss+sentinel://s1:26379/m?sentinel_username=su",
			want: ClientOptions{Failover: &redis.FailoverOptions{SentinelAddrs: []string{"s1:26379"}, MasterName: "m", SentinelUsername: "su"}},
			tls:  tls12,
		},
		{
			name: "cluster",
			url:  "redis+cluster://a:7000,b:7001,c",
			want: ClientOptions{Cluster: &redis.ClusterOptions{Addrs: []string{"a:7000", "b:7001", "c:6379"}}},
		},
		{
			name: "cluster of one seed with TLS",
			url:  "rediss+cluster://u:p@a:7000/?write_timeout=2s",
			want: ClientOptions{Cluster: &redis.ClusterOptions{
				Addrs: []string{"a:7000"}, Username: "u", Password: "p",
				WriteTimeout: 2 * time.Second,
			}},
			tls: tls12,
		},
		// go-redis's own parameters, which the URL did not take before.
		{
			name: "go-redis node parameters",
			url: "rediss://cache?skip_verify=true&protocol=2&pool_fifo=true&max_idle_conns=5&max_active_conns=50" +
				"&min_retry_backoff=10ms&max_retry_backoff=1s&conn_max_lifetime=1h&read_timeout=0&pipeline_pool_size=-1",
			want: ClientOptions{Node: &redis.Options{
				Network: "tcp", Addr: "cache:6379", Protocol: 2, PoolFIFO: true, MaxIdleConns: 5, MaxActiveConns: 50,
				MinRetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: time.Second,
				ConnMaxLifetime: time.Hour, ReadTimeout: -1, PipelinePoolSize: -1,
			}},
			tls: &tlsWant{MinVersion: tls.VersionTLS12, ServerName: "cache", InsecureSkipVerify: true},
		},
		{
			name: "go-redis cluster parameters",
			url:  "redis+cluster://a,b?max_redirects=5&dialer_retries=2&dialer_retry_timeout=100ms&failing_timeout_seconds=30",
			want: ClientOptions{Cluster: &redis.ClusterOptions{
				Addrs: []string{"a:6379", "b:6379"}, MaxRedirects: 5, DialerRetries: 2,
				DialerRetryTimeout: 100 * time.Millisecond, FailingTimeoutSeconds: 30,
			}},
		},
		{
			name: "go-redis sentinel parameters",
			url:  "rediss+sentinel://u:p@s1,s2/m?sentinel_username=su&sentinel_password=sp&skip_verify=1&identitySuffix=cp&pool_timeout=2s",
			want: ClientOptions{Failover: &redis.FailoverOptions{
				SentinelAddrs: []string{"s1:26379", "s2:26379"}, MasterName: "m",
				Username: "u", Password: "p", SentinelUsername: "su", SentinelPassword: "sp",
				IdentitySuffix: "cp", PoolTimeout: 2 * time.Second,
			}},
			tls: &tlsWant{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true},
		},
	}
	ignore := cmpopts.IgnoreUnexported(redis.Options{}, redis.ClusterOptions{}, redis.FailoverOptions{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURL(tt.url)
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.url, err)
			}
			if diff := cmp.Diff(tt.tls, takeTLS(got)); diff != "" {
				t.Errorf("ParseURL(%q) TLS (-want +got):\n%s", tt.url, diff)
			}
			switch {
			case tt.want.Node != nil:
				tt.want.Node.ContextTimeoutEnabled = true
			case tt.want.Cluster != nil:
				tt.want.Cluster.ContextTimeoutEnabled = true
				tt.want.Cluster.ClusterStateReloadInterval = clusterStateReloadInterval
			case tt.want.Failover != nil:
				tt.want.Failover.ContextTimeoutEnabled = true
			}
			if diff := cmp.Diff(&tt.want, got, ignore); diff != "" {
				t.Errorf("ParseURL(%q) (-want +got):\n%s", tt.url, diff)
			}
		})
	}
}

func TestParseURLRejects(t *testing.T) {
	tests := []struct {
		name, url, want string
	}{
		{"no scheme", "cache:6379", "missing scheme"},
		{"other scheme", "http://cache", "unsupported scheme"},
		{"unix socket", "unix:///tmp/redis.sock", "unsupported scheme"},
		{"no host", "redis://", "missing host"},
		{"empty host in list", "redis+cluster://a,,b", "missing host"},
		{"several hosts, one node", "redis://a,b", "takes one host"},
		{"bad port", "redis://cache:99999", "malformed port"},
		{"bad database", "redis://cache/x", "invalid database number"},
		{"negative database", "redis://cache/-1", "database number: want 0 or more"},
		{"negative database parameter", "redis+sentinel://s/m?db=-2", "database number: want 0 or more"},
		{"sentinel without master", "redis+sentinel://s1", "master name"},
		{"cluster database", "redis+cluster://a/1", "no databases"},
		{"cluster db parameter", "redis+cluster://a?db=1", "no databases"},
		{"unknown parameter", "redis://cache?dial_timout=3", "unexpected option: dial_timout"},
		{"sentinel parameter elsewhere", "redis://cache?sentinel_password=x", "unexpected option: sentinel_password"},
		{"bad duration", "redis://cache?dial_timeout=soon", "dial_timeout"},
		{"bad integer", "redis://cache?pool_size=ten", "pool_size"},
		{"negative pool", "redis://cache?pool_size=-1", "pool_size"},
		{"repeated parameter", "redis://cache?db=1&db=2", "given 2 times"},
		{"bare IPv6", "redis://::1", "malformed"},
		{"fragment", "redis://cache#x", "unexpected fragment"},
		{"bad escape", "redis://u:p%zz@cache", "malformed URL"},
		// Parameters that go-redis takes but the URL says otherwise.
		{"host as a parameter", "redis+cluster://a?addr=b:6379", "addr"},
		{"master as a parameter", "redis+sentinel://s/m?master_name=n", "master_name"},
		{"password as a parameter", "redis+sentinel://s/m?password=x", "password"},
		// What go-redis accepts and then fails on, or panics on.
		{"replica reads, cluster", "redis+cluster://a?read_only=true", "masters only"},
		{"replica reads, sentinel", "redis+sentinel://s/m?route_by_latency=true", "masters only"},
		{"replica only", "redis+sentinel://s/m?replica_only=1", "masters only"},
		{"context timeout", "redis+sentinel://s/m?context_timeout_enabled=false", "always on"},
		{"pool over int32", "redis://cache?pool_size=4294967296", "pool_size: at most"},
		{"pipeline pool over int32", "redis+cluster://a?pipeline_pool_size=4294967296", "pipeline_pool_size: at most"},
		{"idle conns over int32", "redis+sentinel://s/m?max_idle_conns=4294967296", "max_idle_conns: at most"},
		{"dial timeout off", "redis://cache?dial_timeout=0", "dial_timeout: want more than 0"},
		{"cluster TLS flag go-redis lacks", "rediss+cluster://a?skip_verify=true", "unexpected option: skip_verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseURL(tt.url)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseURL(%q) error = %v, want one mentioning %q", tt.url, err, tt.want)
			}
		})
	}
}

// TestNewClientNeverPanics covers what go-redis accepts but panics on when
// it builds a client.
func TestNewClientNeverPanics(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:1?pool_size=-1",
		"redis://127.0.0.1:1?pool_size=4294967296",
		"redis://127.0.0.1:1?min_idle_conns=4294967296",
		"redis://127.0.0.1:1?max_active_conns=4294967296",
		"redis://127.0.0.1:1?pipeline_pool_size=4294967296",
		"redis+sentinel://127.0.0.1:1/m?pool_size=-1",
		"redis+sentinel://127.0.0.1:1/m?route_by_latency=true",
		"redis+sentinel://127.0.0.1:1/m?route_randomly=true",
	} {
		t.Run(u, func(t *testing.T) {
			c, err := NewClient(u)
			if err == nil {
				_ = c.Close()
				t.Fatalf("NewClient(%q) accepted it", u)
			}
		})
	}
}

func TestParseURLErrorsHidePasswords(t *testing.T) {
	for _, u := range []string{
		"redis://u:topsecret@a,b/?sentinel_password=alsosecret",
		"redis://u:topsecret@cache/?bad=1",
		"redis://u:topsecret%zz@cache",
		"redis://u:topsecret@cache?password=alsosecret",
		"redis+sentinel://u:topsecret@s/m?sentinel_password=alsosecret&dial_timeout=soon",
		"redis+sentinel://u:topsecret@s/m?sentinel_password=alsosecret&route_randomly=true",
		"redis+cluster://u:topsecret@a,b?protocol=x",
	} {
		_, err := ParseURL(u)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted it", u)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q): error shows a password: %v", u, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"redis://cache:6379/0", "redis://cache:6379/0"},
		{"redis://user:secret@cache:6379/0", "redis://user:xxxxx@cache:6379/0"},
		{"rediss://:secret@cache", "rediss://:xxxxx@cache"},
		{"redis://user@cache", "redis://user@cache"},
		{"redis+sentinel://:pw@a,b/m?sentinel_password=sp&db=1", "redis+sentinel://:xxxxx@a,b/m?db=1&sentinel_password=xxxxx"},
		{"redis://cache?password=pw", "redis://cache?password=xxxxx"},
		{"redis://u:p@ss@cache", "redis://u:xxxxx@cache"},
		{"not a url", "<malformed URL>"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.url); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestNewClientConnects(t *testing.T) {
	srv := redistest.Start(t)
	c, err := NewClient(srv.URL() + "/1?client_name=storetest")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	name, err := c.ClientGetName(t.Context()).Result()
	if err != nil || name != "storetest" {
		t.Errorf("CLIENT GETNAME = %q, %v; want storetest", name, err)
	}
}

func TestNewClientConnectsToCluster(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true})
	c, err := NewClient("redis+cluster://" + srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("NewClient returned a %T, want a *redis.ClusterClient", c)
	}
	if err := c.Set(t.Context(), "{t}:k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
}

// TestNewClientConnectsThroughSentinel shows that the URL's user info
// reaches the master and sentinel_password the Sentinel, which go-redis's
// own URLs have the other way round.
func TestNewClientConnectsThroughSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartWith(t, redistest.Options{SentinelOf: master})
	ctx := t.Context()
	sc := sentinel.Client(t)
	for _, cmd := range [][]any{
		{"SENTINEL", "SET", redistest.SentinelMaster, "auth-pass", "masterpw"},
		{"ACL", "SETUSER", "default", "resetpass", ">sentinelpw"},
	} {
		if err := sc.Do(ctx, cmd...).Err(); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	if err := master.Client(t).ConfigSet(ctx, "requirepass", "masterpw").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}

	c, err := NewClient("redis+sentinel://:masterpw@" + sentinel.Addr() + "/" + redistest.SentinelMaster + "?sentinel_password=sentinelpw&db=2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through Sentinel: %v", err)
	}
	direct := redis.NewClient(&redis.Options{Addr: master.Addr(), Password: "masterpw", DB: 2})
	defer direct.Close()
	if got, err := direct.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET k from the master's database 2 = %q, %v; want \"v\"", got, err)
	}
}
