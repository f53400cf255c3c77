-- The imserver component (XEP-0114) on Prosody: copy to /etc/prosody/conf.d/ (Debian's
-- prosody.cfg.lua includes conf.d/*.cfg.lua at its end), replace dist.example.org and
-- the secret, then `prosodyctl check config` and `systemctl reload prosody`.
--
-- imserver's side is [xmpp] in its config.toml: component = "dist.example.org",
-- domain = your VirtualHost, host/component_port = where this Prosody listens, and
-- the same secret (IMSERVER_XMPP__SECRET in /etc/imserver/imserver.env).
--
-- Prosody accepts one connection per component name: one imserver process. Several
-- processes need ejabberd (see ../ejabberd/imserver.yml).

-- The table form ends the Component section, so the options below are global again
-- (after a plain `Component "…"` line they would belong to the component).
Component "dist.example.org" {
    -- A long random secret: openssl rand -hex 32. Never the repository's default.
    component_secret = "CHANGE-ME-openssl-rand-hex-32";
}

-- Where Prosody accepts components: imserver runs on this machine, so loopback only
-- (use a private address if it runs elsewhere; component streams are not encrypted).
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }
