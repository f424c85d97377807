package redisstore

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a client for a URL accepted by ParseURL.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	opts, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(opts), nil
}

// ParseURL parses a Redis URL into client options, with
// ContextTimeoutEnabled set so that request deadlines reach Redis:
//
//	redis://[user:pass@]host[:port][/db]                    one node
//	rediss://...                                            one node, TLS
//	redis+sentinel://[user:pass@]host:port,host:port/MASTER Sentinel
//	redis+cluster://[user:pass@]host:port,host:port         Cluster
//
// rediss+sentinel and rediss+cluster use TLS. The user and password are the
// data nodes'; Sentinel's own are the query parameters sentinel_username and
// sentinel_password. Other query parameters: db (not for Cluster),
// client_name, protocol, pool_size, min_idle_conns, max_retries, and the
// durations dial_timeout, read_timeout, write_timeout, pool_timeout,
// conn_max_idle_time and conn_max_lifetime (Go syntax, or seconds). Unknown
// parameters are an error, so a typo is not silently ignored. The port
// defaults to 6379, and to 26379 for Sentinel.
func ParseURL(rawURL string) (*redis.UniversalOptions, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("redis URL %s: missing scheme", RedactURL(rawURL))
	}
	o, err := parseURL(scheme, rest)
	if err != nil {
		return nil, fmt.Errorf("redis URL %s: %w", RedactURL(rawURL), err)
	}
	return o, nil
}

func parseURL(scheme, rest string) (*redis.UniversalOptions, error) {
	o := &redis.UniversalOptions{ContextTimeoutEnabled: true}
	var kind string
	switch scheme {
	case "redis", "rediss":
		kind = "node"
	case "redis+sentinel", "rediss+sentinel":
		kind = "sentinel"
	case "redis+cluster", "rediss+cluster":
		kind = "cluster"
		o.IsClusterMode = true
	default:
		return nil, fmt.Errorf("unsupported scheme %q (want redis, rediss, redis+sentinel or redis+cluster)", scheme)
	}
	if strings.HasPrefix(scheme, "rediss") {
		// No ServerName: crypto/tls takes it from each address dialled,
		// which is what a list of hosts needs.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}

	// url.Parse does not accept a list of hosts, so the authority is split
	// off by hand and the rest parsed with a placeholder host.
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	hosts := authority
	u, err := url.Parse("x://placeholder" + tail)
	if err != nil {
		return nil, err
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		hosts = authority[i+1:]
		ui, err := url.Parse("x://" + authority[:i+1] + "placeholder")
		if err != nil {
			return nil, fmt.Errorf("malformed user info")
		}
		o.Username = ui.User.Username()
		o.Password, _ = ui.User.Password()
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("unexpected fragment")
	}

	defaultPort := "6379"
	if kind == "sentinel" {
		defaultPort = "26379"
	}
	for h := range strings.SplitSeq(hosts, ",") {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return nil, err
		}
		o.Addrs = append(o.Addrs, addr)
	}
	if kind == "node" && len(o.Addrs) != 1 {
		return nil, fmt.Errorf("%s:// takes one host; use redis+cluster:// or redis+sentinel:// for several", scheme)
	}

	path := strings.Trim(u.Path, "/")
	switch kind {
	case "node":
		if path != "" {
			if o.DB, err = parseDB(path); err != nil {
				return nil, err
			}
		}
	case "sentinel":
		if path == "" || strings.Contains(path, "/") {
			return nil, fmt.Errorf("want the master name as the path, as in redis+sentinel://host:26379/mymaster")
		}
		o.MasterName = path
	case "cluster":
		if path != "" {
			return nil, fmt.Errorf("unexpected path %q: Redis Cluster has no databases", u.Path)
		}
	}
	if err := parseQuery(o, kind, u.Query()); err != nil {
		return nil, err
	}
	return o, nil
}

func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("missing host")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: a bare host, or a bracketed IPv6 literal.
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
		if strings.ContainsAny(host, "[]") || strings.Contains(host, ":") && !strings.HasPrefix(h, "[") {
			return "", fmt.Errorf("malformed host %q", h)
		}
	}
	if host == "" {
		return "", fmt.Errorf("missing host in %q", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("malformed port in %q", h)
	}
	return net.JoinHostPort(host, port), nil
}

func parseDB(s string) (int, error) {
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("malformed database number %q", s)
	}
	return db, nil
}

func parseQuery(o *redis.UniversalOptions, kind string, q url.Values) error {
	for name, vs := range q {
		if len(vs) != 1 {
			return fmt.Errorf("query parameter %s given %d times", name, len(vs))
		}
		v := vs[0]
		var err error
		switch name {
		case "db":
			if kind == "cluster" {
				return fmt.Errorf("db: Redis Cluster has no databases")
			}
			o.DB, err = parseDB(v)
		case "client_name":
			o.ClientName = v
		case "protocol":
			o.Protocol, err = parseInt(v, 2, 3)
		case "pool_size":
			o.PoolSize, err = parseInt(v, 1, 1<<20)
		case "min_idle_conns":
			o.MinIdleConns, err = parseInt(v, 0, 1<<20)
		case "max_retries":
			o.MaxRetries, err = parseInt(v, -1, 100)
		case "dial_timeout":
			o.DialTimeout, err = parseDuration(v)
		case "read_timeout":
			o.ReadTimeout, err = parseDuration(v)
		case "write_timeout":
			o.WriteTimeout, err = parseDuration(v)
		case "pool_timeout":
			o.PoolTimeout, err = parseDuration(v)
		case "conn_max_idle_time":
			o.ConnMaxIdleTime, err = parseDuration(v)
		case "conn_max_lifetime":
			o.ConnMaxLifetime, err = parseDuration(v)
		case "sentinel_username", "sentinel_password":
			if kind != "sentinel" {
				return fmt.Errorf("%s: only for redis+sentinel://", name)
			}
			if name == "sentinel_username" {
				o.SentinelUsername = v
			} else {
				o.SentinelPassword = v
			}
		default:
			return fmt.Errorf("unknown query parameter %q", name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func parseInt(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("want an integer from %d to %d, got %q", lo, hi, s)
	}
	return n, nil
}

// parseDuration accepts Go durations and, as go-redis's URLs do, plain
// seconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 500ms or 3s, got %q", s)
	}
	return d, nil
}

// RedactURL returns rawURL with its passwords masked, for logs and errors.
func RedactURL(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return "<malformed URL>"
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		user, _, hasPass := strings.Cut(authority[:i], ":")
		if hasPass {
			authority = user + ":xxxxx" + authority[i:]
		}
	}
	if q, frag, ok := strings.Cut(tail, "?"); ok {
		vals, err := url.ParseQuery(strings.SplitN(frag, "#", 2)[0])
		if err != nil {
			return scheme + "://" + authority + q + "?<malformed query>"
		}
		if vals.Has("sentinel_password") {
			vals.Set("sentinel_password", "xxxxx")
		}
		tail = q + "?" + vals.Encode()
	}
	return scheme + "://" + authority + tail
}
