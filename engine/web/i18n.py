"""Page texts of the recipient pages in English and Dutch; the contact's language picks one."""

from __future__ import annotations

from typing import Any

#: Languages the recipient pages are written in; any other contact language reads English.
PAGE_LANGUAGES = ("en", "nl")

_PREFERENCES = {
    "en": {
        "title": "Your preferences", "address": "Address", "saved_choices": "Your choices are saved.",
        "saved_resubscribed": "Welcome back: you are subscribed again.",
        "mail_heading": "What we send you", "mail_intro": "Untick what you would rather not receive.",
        "language": "Language of our mails", "save": "Save my choices", "not_saved": "Nothing was changed",
        "unsubscribed_all": "You are unsubscribed: we send you no newsletters or offers.",
        "not_subscribed": "You are not subscribed to our newsletters; we only send you mail you asked for.",
        "subscribe": "Subscribe to our newsletters",
        "resubscribe": "Subscribe again", "blocked": "Mail to this address is blocked (it bounced or was reported "
                                                     "as spam), so it cannot be switched back on here. Please contact us.",
        "unsubscribe_all": "Unsubscribe from everything",
        "points_heading": "Your points", "balance": "Balance", "points": "points",
        "expiring": "{points} points expire on {date}.", "no_points": "No points yet.",
        "points_when": "Date", "points_what": "What", "points_order": "Order", "points_amount": "Points",
        "entry_earn": "Earned", "entry_welcome": "Welcome bonus", "entry_redeem": "Redeemed",
        "entry_expire": "Expired", "entry_reverse": "Order returned or cancelled", "entry_adjust": "Adjustment",
        "orders_heading": "Your orders", "no_orders": "No orders yet.", "order": "Order", "placed": "Placed",
        "total": "Total", "status": "Status",
        "status_placed": "Placed", "status_paid": "Paid", "status_shipped": "Shipped",
        "status_delivered": "Delivered", "status_returned": "Returned", "status_cancelled": "Cancelled",
        "surveys_heading": "Your survey answers", "no_surveys": "You have not answered a survey yet.",
        "submitted": "Sent {date}", "not_submitted": "Not sent yet", "continue": "Continue this survey",
        "data_heading": "Your data", "data_intro": "Download a copy of everything we store about you, or have it erased.",
        "download": "Download my data (JSON)", "erase": "Erase me",
        "erase_title": "Erase your data?", "erase_intro": "This cannot be undone. We will:",
        "erase_1": "wipe your name, address, language, tags and other details;",
        "erase_2": "keep your orders, points and mail statistics only without anything that identifies you;",
        "erase_3": "never mail this address again (we keep only a one-way fingerprint of it for that).",
        "erase_confirm": "Yes, erase my data", "erase_cancel": "Keep my data",
        "erased_title": "Your data is erased", "erased": "We no longer hold your personal data, and we will not "
                                                         "mail this address again.",
        "test_note": "This link came from a test mail sent to {email}; it shows the preferences of that address.",
        "nobody_title": "Nothing to show", "nobody": "No subscriber has the address {email}. This link came from a "
                                                     "test mail, and its preferences belong to that address.",
        "lang_en": "English", "lang_nl": "Nederlands", "lang_de": "Deutsch", "lang_fr": "Français",
        "lang_es": "Español", "lang_it": "Italiano", "lang_pl": "Polski", "lang_sv": "Svenska",
        "kind_seasonal_discount": "Offers and discounts",
        "kind_seasonal_discount_about": "Seasonal sales and discount codes.",
        "kind_loyalty_points": "Points statements",
        "kind_loyalty_points_about": "Your points balance and rewards you earned.",
        "kind_demo_access": "Trial and demo tips", "kind_demo_access_about": "Help while you try our products.",
        "kind_knowledge_sharing": "Tips and articles",
        "kind_knowledge_sharing_about": "Courses, how-tos and news from our community.",
        "kind_post_purchase_survey": "Questions about your orders",
        "kind_post_purchase_survey_about": "A short survey after you ordered.",
        "kind_contest": "Contests and prize draws", "kind_contest_about": "Invitations to join a draw.",
    },
    "nl": {
        "title": "Je voorkeuren", "address": "Adres", "saved_choices": "Je keuzes zijn opgeslagen.",
        "saved_resubscribed": "Welkom terug: je bent weer aangemeld.",
        "mail_heading": "Wat we je sturen", "mail_intro": "Vink uit wat je liever niet ontvangt.",
        "language": "Taal van onze e-mails", "save": "Keuzes opslaan", "not_saved": "Er is niets gewijzigd",
        "unsubscribed_all": "Je bent afgemeld: we sturen je geen nieuwsbrieven of aanbiedingen.",
        "not_subscribed": "Je bent niet aangemeld voor onze nieuwsbrieven; we sturen je alleen e-mail waar je om vroeg.",
        "subscribe": "Aanmelden voor onze nieuwsbrieven",
        "resubscribe": "Opnieuw aanmelden", "blocked": "E-mail naar dit adres is geblokkeerd (het kwam terug of werd "
                                                      "als spam gemeld), dus het kan hier niet weer aan. Neem contact "
                                                      "met ons op.",
        "unsubscribe_all": "Afmelden voor alles",
        "points_heading": "Je punten", "balance": "Saldo", "points": "punten",
        "expiring": "{points} punten vervallen op {date}.", "no_points": "Nog geen punten.",
        "points_when": "Datum", "points_what": "Wat", "points_order": "Bestelling", "points_amount": "Punten",
        "entry_earn": "Verdiend", "entry_welcome": "Welkomstbonus", "entry_redeem": "Ingewisseld",
        "entry_expire": "Vervallen", "entry_reverse": "Bestelling geretourneerd of geannuleerd",
        "entry_adjust": "Correctie",
        "orders_heading": "Je bestellingen", "no_orders": "Nog geen bestellingen.", "order": "Bestelling",
        "placed": "Geplaatst", "total": "Totaal", "status": "Status",
        "status_placed": "Geplaatst", "status_paid": "Betaald", "status_shipped": "Verzonden",
        "status_delivered": "Bezorgd", "status_returned": "Geretourneerd", "status_cancelled": "Geannuleerd",
        "surveys_heading": "Je antwoorden op enquêtes", "no_surveys": "Je hebt nog geen enquête beantwoord.",
        "submitted": "Verstuurd {date}", "not_submitted": "Nog niet verstuurd", "continue": "Ga verder met deze enquête",
        "data_heading": "Je gegevens", "data_intro": "Download een kopie van alles wat we over je bewaren, of laat "
                                                     "het wissen.",
        "download": "Download mijn gegevens (JSON)", "erase": "Wis mij",
        "erase_title": "Je gegevens wissen?", "erase_intro": "Dit kan niet ongedaan worden gemaakt. We zullen:",
        "erase_1": "je naam, adres, taal, labels en andere gegevens wissen;",
        "erase_2": "je bestellingen, punten en e-mailstatistieken alleen bewaren zonder iets dat naar jou herleidbaar is;",
        "erase_3": "dit adres nooit meer mailen (daarvoor bewaren we er alleen een onomkeerbare vingerafdruk van).",
        "erase_confirm": "Ja, wis mijn gegevens", "erase_cancel": "Mijn gegevens bewaren",
        "erased_title": "Je gegevens zijn gewist", "erased": "We bewaren geen persoonsgegevens meer van je, en we "
                                                           "mailen dit adres niet meer.",
        "test_note": "Deze link komt uit een testmail aan {email}; hij toont de voorkeuren van dat adres.",
        "nobody_title": "Niets te tonen", "nobody": "Geen abonnee heeft het adres {email}. Deze link komt uit een "
                                                    "testmail, en de voorkeuren horen bij dat adres.",
        "lang_en": "English", "lang_nl": "Nederlands", "lang_de": "Deutsch", "lang_fr": "Français",
        "lang_es": "Español", "lang_it": "Italiano", "lang_pl": "Polski", "lang_sv": "Svenska",
        "kind_seasonal_discount": "Aanbiedingen en kortingen",
        "kind_seasonal_discount_about": "Seizoensacties en kortingscodes.",
        "kind_loyalty_points": "Puntenoverzichten",
        "kind_loyalty_points_about": "Je puntensaldo en de beloningen die je verdiende.",
        "kind_demo_access": "Tips bij je proefperiode", "kind_demo_access_about": "Hulp terwijl je onze producten "
                                                                                  "uitprobeert.",
        "kind_knowledge_sharing": "Tips en artikelen",
        "kind_knowledge_sharing_about": "Cursussen, handleidingen en nieuws uit onze community.",
        "kind_post_purchase_survey": "Vragen over je bestellingen",
        "kind_post_purchase_survey_about": "Een korte enquête nadat je bestelde.",
        "kind_contest": "Wedstrijden en prijstrekkingen", "kind_contest_about": "Uitnodigingen voor een trekking.",
    },
}

_UNSUBSCRIBE = {
    "en": {
        "title": "Unsubscribe", "question": "Unsubscribe {email} from {sender} mails?",
        "already": "This address is already unsubscribed. Confirming again changes nothing.",
        "explain": "You will stop receiving newsletters and offers from {sender} at this address.",
        "confirm": "Yes, unsubscribe me", "choose": "Or choose which mails you receive",
        "done_title": "You are unsubscribed",
        "done": "{email} will not receive newsletters or offers from {sender} any more. It may take a moment for "
                "a mail already on its way to stop.",
        "changed_mind": "Changed your mind? You can subscribe again in your preferences.",
    },
    "nl": {
        "title": "Afmelden", "question": "{email} afmelden voor e-mails van {sender}?",
        "already": "Dit adres is al afgemeld. Nogmaals bevestigen verandert niets.",
        "explain": "Je ontvangt dan geen nieuwsbrieven en aanbiedingen van {sender} meer op dit adres.",
        "confirm": "Ja, meld me af", "choose": "Of kies welke e-mails je ontvangt",
        "done_title": "Je bent afgemeld",
        "done": "{email} ontvangt geen nieuwsbrieven of aanbiedingen van {sender} meer. Een e-mail die al onderweg "
                "is, kan nog aankomen.",
        "changed_mind": "Bedacht? Je kunt je opnieuw aanmelden via je voorkeuren.",
    },
}

_COUPON = {
    "en": {
        "title": "Your discount code", "off": "off", "code": "Your code", "copy_hint": "Select the code to copy it.",
        "min_order": "On orders from {amount}.", "valid": "Valid {start} to {end}.", "valid_until": "Valid until {end}.",
        "shop": "Shop now", "redeemed": "This code was used on {date}.", "expired": "This code expired on {end}.",
        "none": "This mail did not come with a discount code.", "tier": "Your level: {tier}",
    },
    "nl": {
        "title": "Je kortingscode", "off": "korting", "code": "Je code", "copy_hint": "Selecteer de code om hem te kopiëren.",
        "min_order": "Bij bestellingen vanaf {amount}.", "valid": "Geldig van {start} tot en met {end}.",
        "valid_until": "Geldig tot en met {end}.", "shop": "Nu winkelen", "redeemed": "Deze code is gebruikt op {date}.",
        "expired": "Deze code is verlopen op {end}.", "none": "Bij deze e-mail hoort geen kortingscode.",
        "tier": "Je niveau: {tier}",
    },
}


def page_language(contact: Any) -> str:
    """'nl' for a Dutch-speaking contact, else 'en' (also for no contact at all)."""
    language = (getattr(contact, "language", None) or "").lower()
    return language if language in PAGE_LANGUAGES else "en"


def preference_labels(lang: str) -> dict[str, str]:
    """Texts of the preference centre and the erase pages."""
    return _PREFERENCES[lang if lang in _PREFERENCES else "en"]


def unsubscribe_labels(lang: str) -> dict[str, str]:
    """Texts of the unsubscribe pages."""
    return _UNSUBSCRIBE[lang if lang in _UNSUBSCRIBE else "en"]


def coupon_labels(lang: str) -> dict[str, str]:
    """Texts of the coupon page."""
    return _COUPON[lang if lang in _COUPON else "en"]
