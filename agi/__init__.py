"""crmagi: Asterisk FastAGI/AMI integration for SuiteCRM and SugarCRM."""
__version__ = "0.1.0"
