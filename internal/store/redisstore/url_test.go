package redisstore

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want redis.UniversalOptions
		tls  bool
	}{
		{
			name: "one node",
			url:  "redis://127.0.0.1:6380",
			want: redis.UniversalOptions{Addrs: []string{"127.0.0.1:6380"}},
		},
		{
			name: "default port",
			url:  "redis://cache.internal",
			want: redis.UniversalOptions{Addrs: []string{"cache.internal:6379"}},
		},
		{
			name: "credentials, database and options",
			url:  "redis://app:p%40ss@cache:6379/2?dial_timeout=3&read_timeout=500ms&client_name=cp&pool_size=20&max_retries=-1",
			want: redis.UniversalOptions{
				Addrs: []string{"cache:6379"}, Username: "app", Password: "p@ss", DB: 2,
				DialTimeout: 3 * time.Second, ReadTimeout: 500 * time.Millisecond,
				ClientName: "cp", PoolSize: 20, MaxRetries: -1,
			},
		},
		{
			name: "database as a parameter",
			url:  "redis://cache?db=4",
			want: redis.UniversalOptions{Addrs: []string{"cache:6379"}, DB: 4},
		},
		{
			name: "TLS",
			url:  "rediss://:secret@cache.example.com:6380",
			want: redis.UniversalOptions{Addrs: []string{"cache.example.com:6380"}, Password: "secret"},
			tls:  true,
		},
		{
			name: "IPv6",
			url:  "redis://[::1]:7000",
			want: redis.UniversalOptions{Addrs: []string{"[::1]:7000"}},
		},
		{
			name: "IPv6 default port",
			url:  "redis://[::1]",
			want: redis.UniversalOptions{Addrs: []string{"[::1]:6379"}},
		},
		{
			name: "sentinel",
			url:  "redis+sentinel://:secret@s1:26380,s2/mymaster?db=3&sentinel_password=sp",
			want: redis.UniversalOptions{
				Addrs: []string{"s1:26380", "s2:26379"}, MasterName: "mymaster", DB: 3,
				Password: "secret", SentinelPassword: "sp",
			},
		},
		{
			name: "sentinel with TLS",
			url:  "rediss+sentinel://s1:26379/m?sentinel_username=su",
			want: redis.UniversalOptions{Addrs: []string{"s1:26379"}, MasterName: "m", SentinelUsername: "su"},
			tls:  true,
		},
		{
			name: "cluster",
			url:  "redis+cluster://a:7000,b:7001,c",
			want: redis.UniversalOptions{Addrs: []string{"a:7000", "b:7001", "c:6379"}, IsClusterMode: true},
		},
		{
			name: "cluster of one seed with TLS",
			url:  "rediss+cluster://u:p@a:7000/?write_timeout=2s",
			want: redis.UniversalOptions{
				Addrs: []string{"a:7000"}, IsClusterMode: true, Username: "u", Password: "p",
				WriteTimeout: 2 * time.Second,
			},
			tls: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURL(tt.url)
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.url, err)
			}
			if (got.TLSConfig != nil) != tt.tls {
				t.Errorf("TLS = %v, want %v", got.TLSConfig != nil, tt.tls)
			}
			if got.TLSConfig != nil && got.TLSConfig.MinVersion != tls.VersionTLS12 {
				t.Errorf("TLS MinVersion = %x, want TLS 1.2", got.TLSConfig.MinVersion)
			}
			got.TLSConfig = nil
			tt.want.ContextTimeoutEnabled = true
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("ParseURL(%q) =\n%+v\nwant\n%+v", tt.url, *got, tt.want)
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
		{"bad database", "redis://cache/x", "malformed database"},
		{"sentinel without master", "redis+sentinel://s1", "master name"},
		{"cluster database", "redis+cluster://a/1", "no databases"},
		{"cluster db parameter", "redis+cluster://a?db=1", "no databases"},
		{"unknown parameter", "redis://cache?dial_timout=3", "unknown query parameter"},
		{"sentinel parameter elsewhere", "redis://cache?sentinel_password=x", "only for redis+sentinel"},
		{"bad duration", "redis://cache?dial_timeout=soon", "dial_timeout"},
		{"bad integer", "redis://cache?pool_size=0", "pool_size"},
		{"repeated parameter", "redis://cache?db=1&db=2", "given 2 times"},
		{"bare IPv6", "redis://::1", "malformed"},
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

func TestParseURLErrorsHidePasswords(t *testing.T) {
	_, err := ParseURL("redis://u:topsecret@a,b/?sentinel_password=alsosecret")
	if err == nil {
		t.Fatal("ParseURL accepted two hosts for one node")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error shows a password: %v", err)
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
