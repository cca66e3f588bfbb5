"""Small lookup tables bundled with the customer_enrichment example (all companies are fictitious).

- COMPANIES: corporate domain -> firmographics, as a licensed company-data provider would return them.
- COUNTRIES: country -> (region, risk), with ISO 3166 alpha-2 aliases in COUNTRY_ALIASES.
- CALLING_CODES: international calling code -> country (NANP +1 is split by CANADIAN_AREA_CODES).
- FREE_MAIL_DOMAINS: consumer mailbox providers, which say nothing about an employer.
- INDUSTRY_KEYWORDS: phrases that reveal an industry in free text (notes, company name, website).
"""

from __future__ import annotations

from typing import NamedTuple


class Company(NamedTuple):
    name: str
    industry: str
    employees: int
    annual_revenue_usd: float


COMPANIES: dict[str, Company] = {
    "goldencrust.example": Company("Golden Crust Sp. z o.o.", "retail", 420, 31_000_000.0),
    "northwind-logistics.example": Company("Northwind Logistics, Inc.", "logistics", 2_300, 410_000_000.0),
    "acme-corp.example": Company("Acme Corp", "manufacturing", 12_500, 2_900_000_000.0),
    "brightpath-retail.example": Company("BrightPath Retail", "retail", 860, 95_000_000.0),
    "cloudcart.example": Company("CloudCart", "software", 140, 18_500_000.0),
    "meridian-data.example": Company("Meridian Data Systems Ltd", "software", 310, 52_000_000.0),
    "halvorsen-retail.example": Company("Halvorsen Retail AB", "retail", 5_400, 1_100_000_000.0),
    "parkside-dental.example": Company("Parkside Dental Group LLC", "healthcare", 95, 14_000_000.0),
    "lumen-analytics.example": Company("Lumen Analytics Inc.", "professional services", 60, 9_800_000.0),
    "tidewater-foods.example": Company("Tidewater Foods Ltd", "food & beverage", 1_850, 240_000_000.0),
    "orbis-software.example": Company("Orbis Software GmbH", "software", 730, 88_000_000.0),
    "kestrel-energy.example": Company("Kestrel Energy plc", "energy", 21_000, 7_400_000_000.0),
    "ferro-build.example": Company("Ferro Build S.p.A.", "construction", 3_900, 620_000_000.0),
    "bluepeak-hotels.example": Company("Bluepeak Hotels Group", "hospitality", 9_200, 1_300_000_000.0),
    "veritas-bank.example": Company("Veritas Private Bank AG", "financial services", 1_200, 480_000_000.0),
}

Region = str
Risk = str
COUNTRIES: dict[str, tuple[Region, Risk]] = {
    "Austria": ("Europe", "low"),
    "Belgium": ("Europe", "low"),
    "Denmark": ("Europe", "low"),
    "Finland": ("Europe", "low"),
    "France": ("Europe", "low"),
    "Germany": ("Europe", "low"),
    "Ireland": ("Europe", "low"),
    "Italy": ("Europe", "low"),
    "Netherlands": ("Europe", "low"),
    "Norway": ("Europe", "low"),
    "Poland": ("Europe", "low"),
    "Portugal": ("Europe", "low"),
    "Spain": ("Europe", "low"),
    "Sweden": ("Europe", "low"),
    "Switzerland": ("Europe", "low"),
    "United Kingdom": ("Europe", "low"),
    "Czech Republic": ("Europe", "low"),
    "Turkey": ("Europe", "medium"),
    "Russia": ("Europe", "high"),
    "Belarus": ("Europe", "high"),
    "United States": ("North America", "low"),
    "Canada": ("North America", "low"),
    "Mexico": ("Latin America", "medium"),
    "Brazil": ("Latin America", "medium"),
    "Venezuela": ("Latin America", "high"),
    "Australia": ("Asia-Pacific", "low"),
    "New Zealand": ("Asia-Pacific", "low"),
    "Japan": ("Asia-Pacific", "low"),
    "Singapore": ("Asia-Pacific", "low"),
    "India": ("Asia-Pacific", "medium"),
    "China": ("Asia-Pacific", "medium"),
    "South Korea": ("Asia-Pacific", "low"),
    "United Arab Emirates": ("Middle East & Africa", "medium"),
    "South Africa": ("Middle East & Africa", "medium"),
    "Nigeria": ("Middle East & Africa", "high"),
    "Iran": ("Middle East & Africa", "high"),
}

COUNTRY_ALIASES: dict[str, str] = {
    "at": "Austria",
    "be": "Belgium",
    "dk": "Denmark",
    "fi": "Finland",
    "fr": "France",
    "de": "Germany",
    "ie": "Ireland",
    "it": "Italy",
    "nl": "Netherlands",
    "no": "Norway",
    "pl": "Poland",
    "pt": "Portugal",
    "es": "Spain",
    "se": "Sweden",
    "ch": "Switzerland",
    "gb": "United Kingdom",
    "uk": "United Kingdom",
    "great britain": "United Kingdom",
    "england": "United Kingdom",
    "cz": "Czech Republic",
    "czechia": "Czech Republic",
    "tr": "Turkey",
    "ru": "Russia",
    "russian federation": "Russia",
    "by": "Belarus",
    "us": "United States",
    "usa": "United States",
    "united states of america": "United States",
    "ca": "Canada",
    "mx": "Mexico",
    "br": "Brazil",
    "ve": "Venezuela",
    "au": "Australia",
    "nz": "New Zealand",
    "jp": "Japan",
    "sg": "Singapore",
    "in": "India",
    "cn": "China",
    "kr": "South Korea",
    "ae": "United Arab Emirates",
    "uae": "United Arab Emirates",
    "za": "South Africa",
    "ng": "Nigeria",
    "ir": "Iran",
}

CALLING_CODES: dict[str, str] = {
    "1": "United States",
    "7": "Russia",
    "27": "South Africa",
    "31": "Netherlands",
    "32": "Belgium",
    "33": "France",
    "34": "Spain",
    "39": "Italy",
    "41": "Switzerland",
    "43": "Austria",
    "44": "United Kingdom",
    "45": "Denmark",
    "46": "Sweden",
    "47": "Norway",
    "48": "Poland",
    "49": "Germany",
    "52": "Mexico",
    "55": "Brazil",
    "58": "Venezuela",
    "61": "Australia",
    "64": "New Zealand",
    "65": "Singapore",
    "81": "Japan",
    "82": "South Korea",
    "86": "China",
    "90": "Turkey",
    "91": "India",
    "98": "Iran",
    "234": "Nigeria",
    "351": "Portugal",
    "353": "Ireland",
    "358": "Finland",
    "375": "Belarus",
    "420": "Czech Republic",
    "971": "United Arab Emirates",
}
CANADIAN_AREA_CODES: frozenset[str] = frozenset(
    "204 226 236 249 250 289 306 343 365 403 416 418 431 437 438 450 506 514 519 548 579 581 587 604 613 639 647"
    " 672 705 709 778 780 782 807 819 825 867 873 902 905".split()
)
TRUNK_PREFIX_KEPT: frozenset[str] = frozenset({"39"})  # Italian numbers keep their leading 0

FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    "gmail.com googlemail.com outlook.com hotmail.com live.com msn.com yahoo.com yahoo.co.uk icloud.com me.com"
    " aol.com proton.me protonmail.com gmx.de gmx.net web.de mail.com yandex.ru wp.pl o2.pl orange.fr free.fr"
    " libero.it qq.com 163.com zoho.com fastmail.com".split()
)

INDUSTRY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "food & beverage": (
        "bakery",
        "bakeries",
        "baker",
        "bakehouse",
        "cafe",
        "café",
        "coffee",
        "restaurant",
        "brewery",
        "winery",
        "catering",
        "food",
        "foods",
        "beverage",
        "patisserie",
        "dairy",
    ),
    "retail": (
        "retail",
        "retailer",
        "e-commerce",
        "ecommerce",
        "supermarket",
        "boutique",
        "department store",
        "online shop",
        "online store",
        "fashion",
    ),
    "software": ("software", "saas", "developer", "cloud", "startup", "it services"),
    "healthcare": ("clinic", "dental", "dentist", "hospital", "pharmacy", "medical", "healthcare", "care home"),
    "logistics": ("logistics", "freight", "shipping", "warehouse", "warehousing", "courier", "trucking"),
    "manufacturing": ("manufacturer", "manufacturing", "factory", "plant", "machining", "fabrication"),
    "construction": ("construction", "builder", "contractor", "architecture", "renovation"),
    "hospitality": ("hotel", "hotels", "hostel", "resort", "bed and breakfast", "travel agency"),
    "financial services": ("bank", "banking", "insurance", "insurer", "fintech", "accounting", "wealth"),
    "education": ("school", "university", "academy", "tutoring", "training", "e-learning"),
    "professional services": ("consulting", "consultancy", "agency", "law firm", "lawyer", "analytics"),
    "media": ("photographer", "photography", "studio", "publisher", "magazine", "film", "video", "design"),
    "energy": ("solar", "wind farm", "utility", "energy", "oil", "gas station"),
    "agriculture": ("farm", "farming", "vineyard", "orchard", "agriculture", "dairy farm"),
}
