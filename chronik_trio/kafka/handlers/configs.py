"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, brokers and groups.

Topic overrides, dynamic broker configs and group configs live in __meta
(TopicConfigsAltered, BrokerConfigsAltered, GroupConfigsAltered), so every node sees the
same; the catalog, validation and resolution are cluster/configs.py. A broker resource
named "" is the cluster-wide default; one named by a node id is that broker's own overrides
(any node can change them: they go through __meta, not to the named broker). A group
resource (Kafka 4's group configs) need not name an existing group, as in Kafka.
"""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode

from chronik_trio.cluster.configs import (CLUSTER_DEFAULT, DYNAMIC_BROKER_CONFIGS, GROUP_BROKER_SETTINGS,
                                          GROUP_CONFIGS, STATIC_BROKER_TYPES, TOPIC_CONFIGS, ConfigChange,
                                          ConfigSource, ConfigType, Resolved, incremental_change,
                                          replace_change, resolve_broker, resolve_group, resolve_topic,
                                          validate_group_configs)
from chronik_trio.cluster.meta import UnknownTopic
from chronik_trio.pb import meta_pb2
from chronik_trio.errors import BrokerError

from ..codec import build, response_schema
from .context import BrokerContext

log = logging.getLogger(__name__)

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_GROUP = 32  # DescribeConfigs' ConfigResource type of a group (Kafka 4, KIP-848)
DESCRIBE_CONFIGS_KEY, ALTER_CONFIGS_KEY, INCREMENTAL_ALTER_CONFIGS_KEY = 32, 33, 44


class UnsupportedResource(BrokerError):
    error_code = ErrorCode.invalid_request


def _static(ctx: BrokerContext) -> dict[str, str]:
    static = ctx.config.kafka_configs()
    static["default.replication.factor"] = str(min(3, max(1, len(ctx.meta.brokers))))
    static.update(GROUP_BROKER_SETTINGS)
    return static


def topic_configs_out(ctx: BrokerContext, topic_configs: dict[str, str], *,
                      synonyms: bool = False, documentation: bool = False) -> list[dict]:
    """Every topic config with its effective value (CreateTopics v5+, DescribeConfigs)."""
    static = _static(ctx)
    return [_entry(resolve_topic(key, topic_configs, ctx.meta.broker_configs, ctx.node_id, static),
                   TOPIC_CONFIGS[key].type, TOPIC_CONFIGS[key].doc, read_only=False,
                   synonyms=synonyms, documentation=documentation)
            for key in sorted(TOPIC_CONFIGS)]


def _broker_configs_out(ctx: BrokerContext, broker: str, synonyms: bool, documentation: bool) -> list[dict]:
    static = _static(ctx)
    node_id = int(broker) if broker else ctx.node_id
    if broker == CLUSTER_DEFAULT:  # the cluster-wide defaults: the dynamic ones set there
        overrides = ctx.meta.broker_configs.get(CLUSTER_DEFAULT, {})
        return [_entry(Resolved(k, v, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                                ((k, v, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),)),
                       DYNAMIC_BROKER_CONFIGS[k].type, DYNAMIC_BROKER_CONFIGS[k].doc, read_only=False,
                       synonyms=synonyms, documentation=documentation)
                for k, v in sorted(overrides.items()) if k in DYNAMIC_BROKER_CONFIGS]
    out = []
    for key in sorted(set(static) | set(DYNAMIC_BROKER_CONFIGS)):
        dynamic = DYNAMIC_BROKER_CONFIGS.get(key)
        if dynamic is not None:
            resolved = resolve_broker(key, ctx.meta.broker_configs, node_id, static)
            out.append(_entry(resolved, dynamic.type, dynamic.doc, read_only=False,
                              synonyms=synonyms, documentation=documentation))
        else:
            resolved = Resolved(key, static[key], ConfigSource.STATIC_BROKER_CONFIG,
                                ((key, static[key], ConfigSource.STATIC_BROKER_CONFIG),))
            out.append(_entry(resolved, STATIC_BROKER_TYPES.get(key, ConfigType.STRING),
                              "Set at node start (flag or config file)", read_only=True,
                              synonyms=synonyms, documentation=documentation))
    return out


def _group_configs_out(ctx: BrokerContext, group: str, synonyms: bool, documentation: bool) -> list[dict]:
    static = _static(ctx)
    overrides = ctx.meta.group_configs.get(group, {})
    return [_entry(resolve_group(key, overrides, static), GROUP_CONFIGS[key].type, GROUP_CONFIGS[key].doc,
                   read_only=False, synonyms=synonyms, documentation=documentation)
            for key in sorted(GROUP_CONFIGS)]


def _check_group_name(name: str) -> None:
    if not name:
        raise UnsupportedResource("a group resource needs a group id")


def _entry(resolved: Resolved, config_type: ConfigType, doc: str, *, read_only: bool,
           synonyms: bool, documentation: bool) -> dict:
    return {"name": resolved.name, "value": resolved.value, "read_only": read_only,
            "config_source": int(resolved.source), "is_sensitive": False,
            "synonyms": [{"name": n, "value": v, "source": int(s)} for n, v, s in resolved.synonyms]
            if synonyms else [],
            "config_type": int(config_type), "documentation": doc if documentation else None}


def _check_broker_name(ctx: BrokerContext, name: str) -> None:
    if name != CLUSTER_DEFAULT and not (name.isdigit() and int(name) in ctx.meta.brokers):
        raise UnsupportedResource(f"broker {name!r} is not a member of this cluster")


def _describe_resource(ctx: BrokerContext, resource, synonyms: bool, documentation: bool) -> dict:
    out = {"resource_type": resource.resource_type, "resource_name": resource.resource_name,
           "error_code": ErrorCode.none, "configs": []}
    keys = set(resource.configuration_keys) if resource.configuration_keys is not None else None
    try:
        if resource.resource_type == RESOURCE_TOPIC:
            topic = ctx.meta.topics.get(resource.resource_name)
            if topic is None:
                raise UnknownTopic(f"topic {resource.resource_name!r} does not exist")
            configs = topic_configs_out(ctx, topic.configs, synonyms=synonyms, documentation=documentation)
        elif resource.resource_type == RESOURCE_BROKER:
            _check_broker_name(ctx, resource.resource_name)
            configs = _broker_configs_out(ctx, resource.resource_name, synonyms, documentation)
        elif resource.resource_type == RESOURCE_GROUP:
            _check_group_name(resource.resource_name)
            configs = _group_configs_out(ctx, resource.resource_name, synonyms, documentation)
        else:
            raise UnsupportedResource(f"resource type {resource.resource_type} is not supported")
    except BrokerError as exc:
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    out["configs"] = [c for c in configs if keys is None or c["name"] in keys]
    return out


async def handle_describe_configs(body, ctx, version: int):
    synonyms = bool(getattr(body, "include_synonyms", False))
    documentation = bool(getattr(body, "include_documentation", False))
    results = [_describe_resource(ctx, r, synonyms, documentation) for r in body.resources]
    return build(response_schema(DESCRIBE_CONFIGS_KEY, version), throttle_time=0, results=results)


async def _alter_resource(ctx: BrokerContext, resource, validate_only: bool, incremental: bool) -> dict:
    out = {"resource_type": resource.resource_type, "resource_name": resource.resource_name,
           "error_code": ErrorCode.none, "error_message": None}
    name = resource.resource_name
    try:
        if resource.resource_type == RESOURCE_TOPIC:
            topic = ctx.meta.topics.get(name)
            if topic is None:
                raise UnknownTopic(f"topic {name!r} does not exist")
            change = _change(TOPIC_CONFIGS, topic.configs, lambda key: ctx.topic_config(topic, key),
                             resource.configs, incremental)
            if not validate_only:
                await ctx.alter_topic_configs(name, change)
        elif resource.resource_type == RESOURCE_BROKER:
            _check_broker_name(ctx, name)
            current = ctx.meta.broker_configs.get(name, {})
            node_id = int(name) if name else ctx.node_id
            static = _static(ctx)
            change = _change(DYNAMIC_BROKER_CONFIGS, current,
                             lambda key: resolve_broker(key, ctx.meta.broker_configs, node_id, static).value,
                             resource.configs, incremental)
            if not validate_only:
                await ctx.alter_broker_configs(name, change)
        elif resource.resource_type == RESOURCE_GROUP:
            _check_group_name(name)
            current = ctx.meta.group_configs.get(name, {})
            static = _static(ctx)
            change = _change(GROUP_CONFIGS, current, lambda key: resolve_group(key, current, static).value,
                             resource.configs, incremental)
            validate_group_configs({**{k: v for k, v in current.items() if k not in change.removed},
                                    **change.set}, static)
            if not validate_only:
                await _alter_group_configs(ctx, name, change)
        else:
            raise UnsupportedResource(f"resource type {resource.resource_type} is not supported")
    except BrokerError as exc:
        log.info("alter configs of %s refused: %s", name or "the cluster default", exc)
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    return out


async def _alter_group_configs(ctx: BrokerContext, group: str, change: ConfigChange) -> None:
    """Commit a group's config change through __meta; raises BrokerError."""
    if not change.set and not change.removed:
        return
    applied = await ctx.propose_meta(meta_pb2.MetaCommand(group_configs_altered=meta_pb2.GroupConfigsAltered(
        group=group, set=change.set, removed=change.removed)))
    if not applied.ok:
        raise applied.error
    log.info("group %s configs: set %s, removed %s", group, change.set, list(change.removed))


def _change(catalog, current, effective, configs, incremental: bool) -> ConfigChange:
    if incremental:
        return incremental_change(catalog, current, effective,
                                  [(c.name, c.config_operation, c.value) for c in configs])
    return replace_change(catalog, current, [(c.name, c.value) for c in configs])


async def handle_alter_configs(body, ctx, version: int):
    responses = [await _alter_resource(ctx, r, body.validate_only, incremental=False) for r in body.resources]
    return build(response_schema(ALTER_CONFIGS_KEY, version), throttle_time=0, responses=responses)


async def handle_incremental_alter_configs(body, ctx, version: int):
    responses = [await _alter_resource(ctx, r, body.validate_only, incremental=True) for r in body.resources]
    return build(response_schema(INCREMENTAL_ALTER_CONFIGS_KEY, version), throttle_time=0,
                 responses=responses)
