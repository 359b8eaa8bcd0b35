"""The plugin API inside `crmagi serve`: its server, its effects, its share of transfers."""
from crmsync.apikeys import KeyStore

from agi.plugin.server import PluginServer

PLUGIN_PREFIX = "p:"


def build(app):
    """A PluginServer for the App's popup server, or None when [webpush] plugin_api is off.

    Its domain events go through the AMI listener's ordered queue when there is one (a
    plugin call and an Asterisk call are one stream of effects), else through a pipeline of
    their own with the same CRM updates and popup notifications."""
    if not app.config.webpush.plugin_api or app.popups is None:
        return None
    live = app.live
    if live is None:
        from agi.ami.live import LivePipeline

        live = LivePipeline(None, app.directory, app.writer, app.flow.call_id_for, app.config.agi.system_name,
                            app.config.dids, notify=app.popups.service.on_ami)
        app.plugin_effects = live
    server = PluginServer(app.tenant, KeyStore(app.engine, app.tenant), app.flow, live.enqueue)
    app.popups.server.plugin = server
    if app.popups.service.dial_call is None:        # no AMI: clicks go to the PBX that owns the phone
        from agi.plugin.dial import PluginClickToCall

        app.click2call = PluginClickToCall(app.config.ami, server, app.directory, app.config.webpush.secret,
                                           internal_max_digits=app.config.lookup.internal_max_digits)
        app.popups.service.dial_call = app.click2call.request
    return server


def route_transfers(ami_transfer, plugin):
    """A popup's transfer: plugin calls to their PBX, the others through AMI Redirect."""
    def transfer(linkedid, extension):
        if plugin is not None and linkedid.startswith(PLUGIN_PREFIX):
            return plugin.transfer(linkedid, extension)
        if ami_transfer is None:
            return False, "transfer needs the AMI listener ([ami] host)"
        return ami_transfer(linkedid, extension)
    return transfer
