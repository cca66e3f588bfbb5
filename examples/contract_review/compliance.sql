-- The compliance rules of the contract_review example. Source of compliance.db:
-- rebuild it with `python -m examples.contract_review.compliance` after editing this file.
--
-- A rule fires on a clause when `pattern` matches its text (Python regex, case-insensitive, on the
-- clause with its whitespace collapsed) and `absent_pattern`, if given, does not match anywhere in it.

CREATE TABLE rules (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    pattern TEXT NOT NULL,
    absent_pattern TEXT,
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    description TEXT NOT NULL,
    guidance TEXT NOT NULL
);

INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'LIAB-001',
    'liability',
    '\bunlimited\s+liability\b|\buncapped\s+liability\b|\bliab\w*\b[^.]{0,120}?\b(?:shall|will|is)\s+(?:be\s+)?(?:unlimited|uncapped)\b|\bliab\w*\b[^.]{0,120}?\b(?:shall|will|is)\s+not\s+be\s+(?:limited|capped)\b|\bliab\w*\b[^.]{0,120}?\bwithout\s+(?:any\s+)?(?:limit|cap|ceiling)(?!ation)\b|\bno\s+(?:limit|cap|ceiling)\s+(?:on|to)\s+(?:\w+\s+){0,3}?liab',
    NULL,
    'high',
    'Liability is unlimited or uncapped',
    'Negotiate an aggregate cap that binds both parties, typically the fees paid in the preceding 12 months.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'LIAB-002',
    'liability',
    '\b(?:shall|will)\s+not\s+exceed\b[^.]{0,120}?(?:\((?:[1-9]|1[01])\)|\b(?:[1-9]|1[01])\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven)\b)\s*(?:\(\d+\)\s*)?(?:calendar\s+)?months?\b',
    NULL,
    'medium',
    'Liability cap below 12 months of fees',
    'A cap under 12 months of fees rarely covers a real loss; ask for at least 12 months (or a fixed floor).'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'LIAB-003',
    'liability',
    '\b(?:exclud\w*|(?:shall|will)\s+not\s+be\s+liable|no\s+liability)\b[^.]{0,160}?\b(?:fraud\w*|wil(?:l)?ful\s+(?:misconduct|default)|gross\s+negligence)',
    '\bnothing\s+in\s+this\b[^.]{0,80}?\b(?:limit|exclude)',
    'medium',
    'Liability excluded for fraud, wilful misconduct or gross negligence',
    'Liability for fraud and wilful misconduct cannot be excluded in most jurisdictions; carve it out of every exclusion.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'REN-001',
    'auto_renewal',
    '\bautomatic(?:ally)?\s+(?:be\s+)?(?:renew|extend)|\brenew\w*\s+(?:\w+\s+)?automatically|\bauto-?renew|\btacit(?:ly)?\s+renew|\bevergreen\b',
    '\bnot\s+(?:be\s+)?(?:automatically\s+)?renew|\bno\s+automatic\s+renewal',
    'medium',
    'The agreement renews automatically',
    'Diarise the non-renewal deadline, or ask for renewal only by written agreement.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'REN-002',
    'auto_renewal',
    '(?:^|[.;]\s)(?=(?:[^.;]|\.(?=\d))*\b(?:renew|non-renewal))(?=(?:[^.;]|\.(?=\d))*?(?:notice(?:[^.;]|\.(?=\d)){0,80}?(?:(?:\((?:9\d|[1-9]\d\d)\)|\b(?:9\d|[1-9]\d\d)\b|\bninety\b)\s*(?:calendar\s+)?days|(?:\((?:[3-9]|1[0-2])\)|\b(?:[3-9]|1[0-2])\b|\b(?:three|four|five|six|nine|twelve)\b)\s*(?:calendar\s+)?months)|(?:(?:\((?:9\d|[1-9]\d\d)\)|\b(?:9\d|[1-9]\d\d)\b|\bninety\b)\s*(?:calendar\s+)?days|(?:\((?:[3-9]|1[0-2])\)|\b(?:[3-9]|1[0-2])\b|\b(?:three|four|five|six|nine|twelve)\b)\s*(?:calendar\s+)?months)\W?\s*(?:prior\s+|advance\s+)?(?:written\s+)?notice))',
    NULL,
    'high',
    'Notice period of 90 days or more to stop automatic renewal',
    'Long non-renewal notice periods lock the customer in; negotiate 30 days or less, or a termination right during renewals.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'TERM-001',
    'termination',
    '(?:^|[.;]\s)(?=(?:[^.;]|\.(?=\d))*\bterminat)(?=(?:[^.;]|\.(?=\d))*\b(?:for\s+(?:its\s+)?convenience|for\s+any\s+(?:or\s+no\s+)?reason|without\s+(?:cause|reason)|at\s+(?:its|their)\s+(?:sole\s+|absolute\s+)?discretion))(?!(?:[^.;]|\.(?=\d))*\b(?:either|each|both|any)\s+part(?:y|ies)\b)(?!(?:[^.;]|\.(?=\d))*\b(?:may|shall|will)\s+not\b)(?!(?:[^.;]|\.(?=\d))*\bcannot\b)',
    NULL,
    'high',
    'Only one party may terminate for convenience',
    'Make the termination-for-convenience right mutual, with the same notice period for both parties.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'IND-001',
    'indemnity',
    '\b(?:indemnif\w*|hold\s+harmless)\b',
    '\b(?:each|either|both)\s+part(?:y|ies)\s+(?:shall|will|agrees?\s+to|undertakes?\s+to)\s+(?:\w+\s+){0,3}?(?:indemnif|defend|hold)|\bmutual(?:ly)?\s+indemn|\b(?-i:([A-Z]\w+))\s+(?:shall|will)\s+(?:\w+\s+){0,2}?indemnify\b.*\b(?!\1\b)(?-i:[A-Z]\w+)\s+(?:shall|will)\s+(?:\w+\s+){0,2}?indemnify\b',
    'high',
    'One-sided indemnity',
    'Ask for mutual indemnities, limited to third-party claims caused by the indemnifying party and subject to the liability cap.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'DATA-001',
    'data_transfer',
    '^(?=.*\b(?:personal\s+(?:data|information)|patient\s+records)\b).*?(?P<hit>\b(?:outside|beyond)\s+(?:of\s+)?(?:the\s+)?(?:EEA|European\s+Economic\s+Area|European\s+Union|EU|UK|United\s+Kingdom)\b|\bthird\s+countr\w*|\bcross-border\b|\binternational(?:ly)?\s+transfer\w*|\b(?:transfer|stor|process|host|locat|server)\w*\b[^.]{0,160}?\bany\s+(?:other\s+)?(?:country|countries|jurisdiction|location|territory)\b|\b(?:transfer|stor|process|host|locat|server)\w*\b[^.]{0,120}?\b(?:in|to)\W+(?:the\s+)?(?:United\s+States|USA|India|China|Russia|Brazil|Philippines)\b)',
    'standard\s+contractual\s+clauses|\bSCCs?\b|adequacy\s+decision|binding\s+corporate\s+rules|appropriate\s+safeguards|Data\s+Privacy\s+Framework|\bIDTA\b|international\s+data\s+transfer\s+agreement|\b(?:shall|will|must)\s+not\s+(?:\w+\s+){0,3}?transfer',
    'high',
    'Personal data transferred outside the EEA/UK without safeguards',
    'Require Standard Contractual Clauses (or an adequacy decision) and a transfer impact assessment before any transfer (GDPR Chapter V).'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'DATA-002',
    'data_transfer',
    '\bsub-?processors?\b',
    '\bprior\s+(?:written\s+)?(?:notice|consent|approval|authori[sz]ation)|\bright\s+to\s+object|\bobject\s+to',
    'medium',
    'Sub-processors engaged without prior notice or consent',
    'GDPR Art. 28 requires prior authorisation of sub-processors and a right to object to changes.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'FEE-001',
    'fee_change',
    '(?:^|[.;]\s)(?=(?:[^.;]|\.(?=\d))*\b(?:increase|change|adjust|revise|vary|modify|amend|raise)\w*\b)(?=(?:[^.;]|\.(?=\d))*\b(?:fees|prices?|charges|rates|pricing)\b)(?=(?:[^.;]|\.(?=\d))*\b(?:at\s+any\s+time|(?:sole|absolute)\s+discretion|from\s+time\s+to\s+time|unilateral\w*|upon\s+(?:written\s+)?notice|by\s+giving\s+(?:\w+\s+){0,3}?notice|on\s+(?:\w+\s+){0,3}?notice))(?!(?:[^.;]|\.(?=\d))*\bmutual)',
    '\bCPI\b|consumer\s+price\s+index|\bRPI\b|\binflation\b|\bnot\s+(?:to\s+)?exceed|\bcapped\b|\bno\s+more\s+than|\bmutual(?:ly)?\s+agree|\bagreed\s+in\s+writing\s+by\s+both',
    'high',
    'One party may change the fees unilaterally, without a cap',
    'Fix prices for the initial term; allow increases only once a year, capped (e.g. CPI), with a right to terminate.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'LAW-001',
    'governing_law',
    '\b(?:(?:laws?|courts?|tribunals?)\s+(?:of|in|located\s+in|sitting\s+in)|seated\s+in|seat\s+of\s+(?:the\s+)?arbitration\s+(?:shall\s+be|is|will\s+be)(?:\s+in)?)\s+(?!(?:the\s+)?(?:(?:State|Province|Commonwealth|Republic|Kingdom|Principality|Emirate)\s+of\s+(?:the\s+)?)?(?:England|Wales|Scotland|Northern\s+Ireland|Ireland|United\s+Kingdom|Germany|France|Netherlands|Belgium|Luxembourg|Austria|Switzerland|Sweden|Denmark|Finland|Norway|Spain|Italy|Portugal|Poland|New\s+York|Delaware|California|Texas|Illinois|Massachusetts|Washington|Ontario|Singapore|New\s+South\s+Wales|London|Dublin|Paris|Amsterdam|Stockholm|Zurich|Geneva|Munich|Frankfurt|Berlin|Toronto)\b)(?:the\s+)?(?:(?:State|Province|Commonwealth|Republic|Kingdom|Principality|Emirate)\s+of\s+(?:the\s+)?)?(?-i:[A-Z])',
    NULL,
    'medium',
    'Governing law or venue outside the approved jurisdictions',
    'Use the law and courts of an approved jurisdiction (one of the parties'' home jurisdictions, or England, New York, ...).'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'CONF-001',
    'confidentiality',
    '\bconfidential\w*\b[^.]{0,200}?\b(?:perpetu\w*|indefinite(?:ly)?|without\s+(?:time\s+)?limit(?!ation)|no\s+time\s+limit|for\s*ever)\b|\b(?:perpetu\w*|indefinite(?:ly)?)\b[^.]{0,200}?\bconfidential',
    NULL,
    'medium',
    'Confidentiality obligations without a time limit',
    'Limit confidentiality to a fixed period after termination (typically 3 to 5 years), trade secrets excepted.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'IP-001',
    'ip',
    '\b(?:pre-?existing|background|prior)\s+(?:intellectual\s+property|IP|materials|technology|know-how)\b[^.]{0,160}?\b(?:assign\w*|vest\w*|transfer\w*|become\s+the\s+(?:sole\s+|exclusive\s+)?property)|\b(?:assign\w*|vest\w*)\b[^.]{0,160}?\b(?:pre-?existing|background)\s+(?:intellectual\s+property|IP|materials|technology)',
    '\b(?:retain\w*|remain\w*)\b[^.]{0,80}?\b(?:pre-?existing|background)|\b(?:pre-?existing|background)\b[^.]{0,80}?\b(?:retain\w*|remain\w*)|\bnothing\s+in\s+this\s+(?:agreement|clause)\s+(?:shall\s+)?(?:assign|transfer)',
    'high',
    'Pre-existing intellectual property is assigned',
    'Each party should keep its pre-existing IP; grant a licence to use it with the deliverables instead of assigning it.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'PAY-001',
    'payment',
    '\binterest\b[^.]{0,80}?(?:\b(?:1[3-9]|[2-9]\d|\d{3})(?:\.\d+)?|\b12\.\d*[1-9]\d*)\s*(?:%|per\s*cent)\s*(?:per\s+(?:annum|year)|a\s+year|annually|p\.?\s?a\b)|\binterest\b[^.]{0,80}?(?:\b1\.\d*[1-9]\d*|\b[2-9](?:\.\d+)?|\b\d{2}(?:\.\d+)?)\s*(?:%|per\s*cent)\s*(?:per\s+month|a\s+month|monthly)',
    NULL,
    'medium',
    'Late-payment interest above 12% a year',
    'Late-payment interest above 12% a year (1% a month) may be unenforceable as a penalty; align it with the statutory rate.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'EXCL-001',
    'exclusivity',
    '\bexclusive\s+(?:supplier|provider|vendor|distributor|reseller|basis|dealing|arrangement|partner)|\bexclusivity\b|\bexclusively\s+(?:from|with|through)|\bshall\s+not\s+(?:\w+\s+){0,3}?(?:procure|purchase|obtain|source|buy)\b[^.]{0,80}\bfrom\s+any\s+(?:other|third)',
    NULL,
    'medium',
    'Exclusivity obligation',
    'Exclusivity needs business sign-off; limit its scope and duration and tie it to service levels.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'NSOL-001',
    'non_solicitation',
    '\b(?:solicit|entice|poach)\w*\b[^.]{0,100}?\b(?:employees?|personnel|staff|contractors?)\b|\bnot\s+(?:\w+\s+){0,4}?(?:hire|employ|engage)\b[^.]{0,60}?\b(?:employees?|personnel|staff)\b',
    NULL,
    'low',
    'Non-solicitation of staff',
    'Check that the restriction is mutual and excludes responses to general job advertisements.'
);
INSERT INTO rules (id, category, pattern, absent_pattern, severity, description, guidance) VALUES (
    'NSOL-002',
    'non_solicitation',
    '(?:^|[.;]\s)(?=(?:[^.;]|\.(?=\d))*\b(?:solicit|entice|poach|hire|employ)\w*)(?=(?:[^.;]|\.(?=\d))*(?:\((?:1[3-9]|[2-9]\d)\)|\b(?:1[3-9]|[2-9]\d)\b|\b(?:eighteen|twenty-four|thirty-six)\b)\s*(?:calendar\s+)?months|(?:[^.;]|\.(?=\d))*(?:\([2-9]\)|\b[2-9]\b|\b(?:two|three|four|five)\b)\s*years)',
    NULL,
    'medium',
    'Non-solicitation lasting more than 12 months',
    'Restrictions on hiring longer than 12 months after the agreement ends may be unenforceable; limit to 6-12 months.'
);
