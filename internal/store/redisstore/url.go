package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClientOptions is what a Redis URL describes: the go-redis options of one
// node, of a Cluster, or of a master found through Sentinel. Exactly one
// field is set.
type ClientOptions struct {
	Node     *redis.Options
	Cluster  *redis.ClusterOptions
	Failover *redis.FailoverOptions
}

// clusterStateReloadInterval is how often a Cluster client in use reads the
// slots' masters again.
const clusterStateReloadInterval = time.Second

// NewClient returns a client for a URL accepted by ParseURL.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch {
	case o.Cluster != nil:
		return redis.NewClusterClient(o.Cluster), nil
	case o.Failover != nil:
		return redis.NewFailoverClient(o.Failover), nil
	default:
		return redis.NewClient(o.Node), nil
	}
}

// ParseURL parses a Redis URL into client options with go-redis's own
// parsers (redis.ParseURL, ParseClusterURL and ParseFailoverURL), so the
// query parameters they take work here too:
//
//	redis://[user:pass@]host[:port][/db]                    one node
//	rediss://...                                            one node, TLS
//	redis+sentinel://[user:pass@]host:port,host:port/MASTER Sentinel
//	redis+cluster://[user:pass@]host:port,host:port         Cluster
//
// rediss+sentinel and rediss+cluster use TLS. The user and password are the
// data nodes'; Sentinel's own are the query parameters sentinel_username and
// sentinel_password. The port defaults to 6379, and to 26379 for Sentinel.
// Unlike go-redis, a parameter given twice is an error rather than the last
// one winning, and so are those that send reads to replicas and those that
// would repeat what the URL says (addr, master_name, username, password).
// Options always have ContextTimeoutEnabled set, so that request deadlines
// reach Redis.
func ParseURL(rawURL string) (*ClientOptions, error) {
	o, err := parseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %s: %w", RedactURL(rawURL), err)
	}
	return o, nil
}

// parseURL turns our URL into go-redis's form and parses that: go-redis
// takes one host in the URL and the others as addr parameters, and its
// Sentinel URLs carry Sentinel's credentials in the user info, the data
// nodes' as parameters, and the master's name as a parameter.
func parseURL(rawURL string) (*ClientOptions, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errors.New("missing scheme")
	}
	base, kind, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" || kind != "" && kind != "sentinel" && kind != "cluster" {
		return nil, fmt.Errorf("unsupported scheme %q (want redis, rediss, redis+sentinel or redis+cluster)", scheme)
	}

	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	userinfo, hosts := "", rest[:end]
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		userinfo, hosts = hosts[:i+1], hosts[i+1:]
	}
	defaultPort := "6379"
	if kind == "sentinel" {
		defaultPort = "26379"
	}
	var addrs []string
	for h := range strings.SplitSeq(hosts, ",") {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	if kind == "" && len(addrs) > 1 {
		return nil, fmt.Errorf("%s:// takes one host; use redis+cluster:// or redis+sentinel:// for several", scheme)
	}

	u, err := url.Parse(base + "://" + userinfo + addrs[0] + rest[end:])
	if err != nil {
		return nil, fmt.Errorf("malformed URL: %w", withoutURL(err))
	}
	if u.Fragment != "" {
		return nil, errors.New("unexpected fragment")
	}
	q := u.Query()
	for name, vs := range q {
		if len(vs) != 1 {
			return nil, fmt.Errorf("query parameter %s given %d times", name, len(vs))
		}
		switch name {
		case "addr", "master_name", "username", "password":
			return nil, fmt.Errorf("query parameter %s: give hosts, master name, user and password in the URL itself", name)
		case "read_only", "route_by_latency", "route_by_latency_tolerance", "route_randomly", "replica_only", "use_disconnected_replicas":
			// The store reads back what it has just written (versions,
			// etags), which a replica may not have yet.
			return nil, fmt.Errorf("query parameter %s: the store reads from masters only", name)
		case "context_timeout_enabled":
			return nil, fmt.Errorf("query parameter %s: always on, so that request deadlines reach Redis", name)
		}
	}

	o := &ClientOptions{}
	switch kind {
	case "":
		o.Node, err = redis.ParseURL(u.String())
	case "cluster":
		// go-redis would ignore a path; say that it means nothing.
		if strings.Trim(u.Path, "/") != "" || q.Has("db") {
			return nil, errors.New("unexpected path or db parameter: Redis Cluster has no databases")
		}
		u.Path = ""
		q["addr"] = addrs[1:]
		u.RawQuery = q.Encode()
		o.Cluster, err = redis.ParseClusterURL(u.String())
	case "sentinel":
		master := strings.Trim(u.Path, "/")
		if master == "" || strings.Contains(master, "/") {
			return nil, errors.New("want the master name as the path, as in redis+sentinel://host:26379/mymaster")
		}
		if u.User != nil {
			q.Set("username", u.User.Username())
			if p, ok := u.User.Password(); ok {
				q.Set("password", p)
			}
		}
		u.User = nil
		if su, sp := q.Get("sentinel_username"), q.Get("sentinel_password"); su != "" || sp != "" {
			u.User = url.UserPassword(su, sp)
		}
		q.Del("sentinel_username")
		q.Del("sentinel_password")
		q.Set("master_name", master)
		q["addr"] = addrs[1:]
		u.Path = ""
		u.RawQuery = q.Encode()
		o.Failover, err = redis.ParseFailoverURL(u.String())
	}
	if err != nil {
		return nil, withoutURL(err)
	}
	if err := o.finish(); err != nil {
		return nil, err
	}
	return o, nil
}

// finish sets what every client of the store needs, and refuses what
// go-redis would accept and then fail on: a negative database (it would
// use database 0), pool sizes that make it panic when it builds a client,
// and a dial timeout "turned off" (0 or less), which it passes on as -1
// and so fails every dial.
func (o *ClientOptions) finish() error {
	switch {
	case o.Node != nil:
		n := o.Node
		n.ContextTimeoutEnabled = true
		return check(n.DB, n.DialTimeout, n.PoolSize, n.MinIdleConns, n.MaxIdleConns, n.MaxActiveConns, n.PipelinePoolSize)
	case o.Cluster != nil:
		c := o.Cluster
		c.ContextTimeoutEnabled = true
		// A master that died answers no MOVED, so go-redis learns of the
		// replica that took over only when it reads the slots again: by
		// default a minute later, a minute of failed calls.
		if c.ClusterStateReloadInterval == 0 {
			c.ClusterStateReloadInterval = clusterStateReloadInterval
		}
		// go-redis names the first host as the TLS server of every node,
		// which fails every other node's certificate; without a name,
		// crypto/tls takes it from each address dialled.
		if c.TLSConfig != nil {
			c.TLSConfig.ServerName, c.TLSConfig.MinVersion = "", tls.VersionTLS12
		}
		return check(0, c.DialTimeout, c.PoolSize, c.MinIdleConns, c.MaxIdleConns, c.MaxActiveConns, c.PipelinePoolSize)
	default:
		f := o.Failover
		f.ContextTimeoutEnabled = true
		// The same name would be checked against Sentinels and data nodes.
		if f.TLSConfig != nil {
			f.TLSConfig.ServerName = ""
		}
		return check(f.DB, f.DialTimeout, f.PoolSize, f.MinIdleConns, f.MaxIdleConns, f.MaxActiveConns, f.PipelinePoolSize)
	}
}

func check(db int, dialTimeout time.Duration, pool, minIdle, maxIdle, maxActive, pipeline int) error {
	if db < 0 {
		return fmt.Errorf("database number: want 0 or more, got %d", db)
	}
	if dialTimeout < 0 {
		return errors.New("dial_timeout: want more than 0")
	}
	if pool < 0 {
		return fmt.Errorf("pool_size: want 0 (the default) or more, got %d", pool)
	}
	for _, s := range []struct {
		name string
		n    int
	}{{"pool_size", pool}, {"min_idle_conns", minIdle}, {"max_idle_conns", maxIdle}, {"max_active_conns", maxActive}, {"pipeline_pool_size", pipeline}} {
		if s.n > math.MaxInt32 {
			return fmt.Errorf("%s: at most %d, got %d", s.name, math.MaxInt32, s.n)
		}
	}
	return nil
}

// withoutURL returns the reason of a *url.Error, which quotes the whole URL,
// password included.
func withoutURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// hostPort checks one host of the URL's list and adds the default port.
func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("missing host")
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
		// password is refused as a parameter, but the error quotes the URL.
		for _, name := range []string{"password", "sentinel_password"} {
			if vals.Has(name) {
				vals.Set(name, "xxxxx")
			}
		}
		tail = q + "?" + vals.Encode()
	}
	return scheme + "://" + authority + tail
}
