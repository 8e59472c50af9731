"""Campaign files: loading, validation and the campaign kinds."""

from .definition import CampaignDefinition, Variant
from .loader import SEGMENTS_FILE, campaign_file, campaign_files, load_campaign, load_campaign_id, load_stored

__all__ = ["CampaignDefinition", "Variant", "SEGMENTS_FILE", "campaign_file", "campaign_files", "load_campaign", "load_campaign_id", "load_stored"]
